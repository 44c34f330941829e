#!/usr/bin/python3
"""Fetches a URL over HTTP/3 only (libcurl with ngtcp2 + nghttp3, via
pycurl) and prints the status line, the response fields and the body."""
import argparse
import sys

import pycurl


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("url")
    ap.add_argument("--cacert", help="CA certificate to trust (PEM)")
    ap.add_argument("--insecure", action="store_true")
    ap.add_argument("-X", "--method", default="GET")
    ap.add_argument("-d", "--data", help="request body")
    args = ap.parse_args()
    c = pycurl.Curl()
    c.setopt(pycurl.URL, args.url)
    # pycurl 7.45 predates the name; 31 is libcurl's CURL_HTTP_VERSION_3ONLY.
    c.setopt(pycurl.HTTP_VERSION, getattr(pycurl, "CURL_HTTP_VERSION_3ONLY", 31))
    if args.cacert:
        c.setopt(pycurl.CAINFO, args.cacert)
        c.setopt(pycurl.CAPATH, None)
    if args.insecure:
        c.setopt(pycurl.SSL_VERIFYPEER, 0)
        c.setopt(pycurl.SSL_VERIFYHOST, 0)
    c.setopt(pycurl.CUSTOMREQUEST, args.method)
    if args.data is not None:
        c.setopt(pycurl.POSTFIELDS, args.data)
    c.setopt(pycurl.HEADERFUNCTION, lambda h: sys.stdout.write(h.decode("latin-1")))
    c.setopt(pycurl.WRITEFUNCTION, sys.stdout.buffer.write)
    try:
        c.perform()
    except pycurl.error as e:
        print(f"h3get: {e.args[1]}", file=sys.stderr)
        return 1
    finally:
        c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
