"""Makes signed URLs, cookies and tokens with the signers people already use, for the edge's
token tests: botocore's CloudFrontSigner (with the `rsa` package, as its docs show) and the
`akamai-edgeauth` package. Prints one value on stdout.

  sign_tokens.py cf-keygen DIR                         DIR/cf-private.pem, DIR/cf-public.pem (PKCS#1)
  sign_tokens.py cf-canned KEY_ID PRIVATE URL EXPIRES  a signed URL (canned policy)
  sign_tokens.py cf-custom KEY_ID PRIVATE URL RESOURCE EXPIRES [IP]
                                                       a signed URL (custom policy)
  sign_tokens.py cf-cookie KEY_ID PRIVATE RESOURCE EXPIRES
                                                       a Cookie header value (custom policy)
  sign_tokens.py akamai-acl HEX_KEY ACL EXPIRES [IP]   a token for the ACL (e.g. /v/*)
  sign_tokens.py akamai-url HEX_KEY PATH EXPIRES       a token for one URL path
"""

import datetime
import sys

import rsa
from akamai.edgeauth import EdgeAuth
from botocore.signers import CloudFrontSigner


def rsa_signer(private_path):
    with open(private_path, "rb") as f:
        key = rsa.PrivateKey.load_pkcs1(f.read())
    return lambda message: rsa.sign(message, key, "SHA-1")


def when(epoch):
    return datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "cf-keygen":
        public, private = rsa.newkeys(2048)
        with open(f"{args[0]}/cf-private.pem", "wb") as f:
            f.write(private.save_pkcs1())
        with open(f"{args[0]}/cf-public.pem", "wb") as f:
            f.write(public.save_pkcs1())
        print(args[0])
    elif cmd == "cf-canned":
        key_id, private, url, expires = args
        signer = CloudFrontSigner(key_id, rsa_signer(private))
        print(signer.generate_presigned_url(url, date_less_than=when(expires)))
    elif cmd == "cf-custom":
        key_id, private, url, resource, expires = args[:5]
        ip = args[5] if len(args) > 5 else None
        signer = CloudFrontSigner(key_id, rsa_signer(private))
        policy = signer.build_policy(resource, when(expires), ip_address=ip)
        print(signer.generate_presigned_url(url, policy=policy))
    elif cmd == "cf-cookie":
        key_id, private, resource, expires = args
        signer = CloudFrontSigner(key_id, rsa_signer(private))
        policy = signer.build_policy(resource, when(expires)).encode()
        # What people write for signed cookies: botocore signs and encodes, they set cookies.
        b64 = signer._url_b64encode
        sig = b64(rsa_signer(private)(policy)).decode()
        print(
            f"CloudFront-Policy={b64(policy).decode()}; "
            f"CloudFront-Signature={sig}; CloudFront-Key-Pair-Id={key_id}"
        )
    elif cmd == "akamai-acl":
        key, acl, expires = args[:3]
        ip = args[3] if len(args) > 3 else None
        auth = EdgeAuth(key=key, end_time=int(expires), ip=ip)
        print(auth.generate_acl_token(acl))
    elif cmd == "akamai-url":
        key, path, expires = args
        print(EdgeAuth(key=key, end_time=int(expires)).generate_url_token(path))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
