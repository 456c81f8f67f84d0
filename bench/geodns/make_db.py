#!/usr/bin/env python3
"""Writes a small GeoIP2-City-shaped MaxMind DB for the GeoDNS benchmark.

Usage: make_db.py OUT_DIR
Writes OUT_DIR/bench-city.mmdb and OUT_DIR/clients.csv (subnet,city,lat,lon,country,continent).

The client networks are test/documentation ranges only (10.0.0.0/8, 100.64.0.0/10,
2001:db8::/32): nothing here is real geolocation data. Records carry the GeoIP2 City fields
that geodns and gdnsd read: location.latitude/longitude (doubles), location.accuracy_radius,
country.iso_code, continent.code, city.names.en and geoname_ids.

Needs PyPI mmdb-writer (make-db.sh installs it in a venv).
"""

import csv
import os
import sys

from mmdb_writer import MMDBWriter, MmdbU16, MmdbU32
from netaddr import IPSet

# subnet, city, latitude, longitude, country, continent
CLIENTS = [
    ("10.1.0.0/16", "Frankfurt", 50.1109, 8.6821, "DE", "EU"),
    ("10.2.0.0/16", "London", 51.5074, -0.1278, "GB", "EU"),
    ("10.3.0.0/16", "Madrid", 40.4168, -3.7038, "ES", "EU"),
    ("10.4.0.0/16", "Moscow", 55.7558, 37.6173, "RU", "EU"),
    ("10.5.0.0/16", "Reykjavik", 64.1466, -21.9426, "IS", "EU"),
    ("10.6.0.0/16", "New York", 40.7128, -74.0060, "US", "NA"),
    ("10.7.0.0/16", "Chicago", 41.8781, -87.6298, "US", "NA"),
    ("10.8.0.0/16", "Los Angeles", 34.0522, -118.2437, "US", "NA"),
    ("10.9.0.0/16", "Mexico City", 19.4326, -99.1332, "MX", "NA"),
    ("10.10.0.0/16", "Sao Paulo", -23.5505, -46.6333, "BR", "SA"),
    ("10.11.0.0/16", "Buenos Aires", -34.6037, -58.3816, "AR", "SA"),
    ("10.12.0.0/16", "Tokyo", 35.6762, 139.6503, "JP", "AS"),
    ("10.13.0.0/16", "Mumbai", 19.0760, 72.8777, "IN", "AS"),
    ("10.14.0.0/16", "Singapore", 1.3521, 103.8198, "SG", "AS"),
    ("10.15.0.0/16", "Sydney", -33.8688, 151.2093, "AU", "OC"),
    ("100.64.0.0/16", "Johannesburg", -26.2041, 28.0473, "ZA", "AF"),
    ("100.65.0.0/16", "Lagos", 6.5244, 3.3792, "NG", "AF"),
    ("100.66.0.0/16", "Nairobi", -1.2921, 36.8219, "KE", "AF"),
    ("100.67.0.0/16", "Dubai", 25.2048, 55.2708, "AE", "AS"),
    ("100.68.0.0/16", "Honolulu", 21.3069, -157.8583, "US", "NA"),
    ("100.69.0.0/16", "Auckland", -36.8485, 174.7633, "NZ", "OC"),
    ("2001:db8:1::/48", "Paris", 48.8566, 2.3522, "FR", "EU"),
    ("2001:db8:2::/48", "Seattle", 47.6062, -122.3321, "US", "NA"),
    ("2001:db8:3::/48", "Seoul", 37.5665, 126.9780, "KR", "AS"),
    ("2001:db8:4::/48", "Perth", -31.9505, 115.8605, "AU", "OC"),
    ("2001:db8:5::/48", "Lima", -12.0464, -77.0428, "PE", "SA"),
    ("2001:db8:6::/48", "Cairo", 30.0444, 31.2357, "EG", "AF"),
]

CONTINENT_NAMES = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}


def record(i, city, lat, lon, country, continent):
    # Made-up geoname ids (not GeoNames' real ones): unique per record is all that matters.
    return {
        "city": {"geoname_id": MmdbU32(9_100_000 + i), "names": {"en": city}},
        "continent": {
            "code": continent,
            "geoname_id": MmdbU32(9_000_000 + sorted(CONTINENT_NAMES).index(continent)),
            "names": {"en": CONTINENT_NAMES[continent]},
        },
        "country": {
            "iso_code": country,
            "geoname_id": MmdbU32(9_200_000 + i),
            "names": {"en": country},
        },
        "location": {
            "accuracy_radius": MmdbU16(20),
            "latitude": float(lat),
            "longitude": float(lon),
        },
    }


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_db.py OUT_DIR")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-City",
        languages=["en"],
        description="quicdn geodns benchmark test data (documentation/test ranges only)",
    )
    for i, (subnet, city, lat, lon, country, continent) in enumerate(CLIENTS):
        writer.insert_network(IPSet([subnet]), record(i, city, lat, lon, country, continent))
    db = os.path.join(out, "bench-city.mmdb")
    writer.to_db_file(db)
    with open(os.path.join(out, "clients.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subnet", "city", "lat", "lon", "country", "continent"])
        for subnet, city, lat, lon, country, continent in CLIENTS:
            w.writerow([subnet, city, lat, lon, country, continent])
    print(f"{db}: {len(CLIENTS)} client networks")


if __name__ == "__main__":
    main()
