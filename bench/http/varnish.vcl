# bench/http Varnish: rendered by run.sh into WORK/varnish.vcl. Storage and listeners are on
# varnishd's command line (-s malloc, -a h1 and -a PROXY for hitch). The origin's
# Cache-Control: max-age=3600 sets the TTL; nothing else is changed from the builtin VCL.
vcl 4.1;

backend origin {
    .host = "127.0.0.1";
    .port = "@ORIGIN_HTTP_PORT@";
}

sub vcl_deliver {
    # X-Varnish carries two transaction ids on a hit; this says it in words as well.
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
