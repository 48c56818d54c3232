#!/usr/bin/env python3
"""An old host of the original Shared Fail2Ban, written from its description (standard library
only): `put` is what its actionban script sends, `pull` what its cron job does every minute.

  old_host.py put  APIURL TOKEN JAIL PROTO PORT IP BANTIME [--source ADDR] [--hostname NAME]
  old_host.py pull APIURL JAIL LOGDIR [--source ADDR] [--who SEGMENT]

`pull` rewrites LOGDIR/filter-<jail>.log with one `<created> [<ip>] <port> <protocol>` line per
ban of the last hour, which a local jail (failregex `\\[<HOST>\\]`) bans from.
"""

import argparse
import datetime
import http.client
import json
import os
import socket
import sys
import urllib.parse


def connection(apiurl, source):
    url = urllib.parse.urlsplit(apiurl)
    src = (source, 0) if source else None
    return http.client.HTTPConnection(url.hostname, url.port, timeout=10, source_address=src), url.path


def put(args):
    conn, path = connection(args.apiurl, args.source)
    body = json.dumps({
        "hostname": args.hostname or socket.gethostname(),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f"),
        "jail": args.jail,
        "proto": args.proto,
        "port": args.port,
        "ip": args.ip,
        "bantime": args.bantime,
    })
    conn.request("PUT", path + "/put", body=body,
                 headers={"X-TOKEN": args.token, "Content-Type": "application/json"})
    response = conn.getresponse()
    text = response.read().decode()
    print(response.status, text.strip())
    return 0 if response.status == 200 and text == "OK" else 1


def pull(args):
    conn, path = connection(args.apiurl, args.source)
    target = path + "/time/" + args.jail + "/1" + ("/" + args.who if args.who else "")
    conn.request("GET", target)
    response = conn.getresponse()
    text = response.read().decode()
    if response.status != 200:
        print(response.status, text.strip())
        return 1
    entries = json.loads(text)
    log = os.path.join(args.logdir, "filter-%s.log" % args.jail)
    with open(log + ".tmp", "w") as out:
        for e in entries:
            out.write("%d [%s] %s %s\n" % (e["created"], e["ip"], e["port"], e["protocol"]))
    os.replace(log + ".tmp", log)
    print(len(entries))
    return 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("put")
    for name in ("apiurl", "token", "jail", "proto", "port", "ip", "bantime"):
        p.add_argument(name)
    p.add_argument("--source")
    p.add_argument("--hostname")
    q = sub.add_parser("pull")
    for name in ("apiurl", "jail", "logdir"):
        q.add_argument(name)
    q.add_argument("--source")
    q.add_argument("--who")
    args = parser.parse_args()
    return put(args) if args.command == "put" else pull(args)


if __name__ == "__main__":
    sys.exit(main())
