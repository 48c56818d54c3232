#!/usr/bin/env python3
"""An old host of the original Shared Fail2Ban, written from its description (standard library
only): `put` is what its actionban script sends, `pull` what its cron job does every minute.

  old_host.py put  APIURL TOKEN JAIL PROTO PORT IP BANTIME [--source ADDR] [--hostname NAME]
  old_host.py pull APIURL JAIL LOGDIR [--source ADDR] [--who SEGMENT]
  old_host.py put-sql  DATABASE HOSTNAME JAIL PROTO PORT IP BANTIME
  old_host.py pull-sql DATABASE HOSTNAME JAIL LOGDIR

The -sql forms write and read the table straight, as hosts without the API do (through the
`mariadb` client: DATABASE is `user:password@host:port/db`).

`pull` rewrites LOGDIR/filter-<jail>.log with one `<created> [<ip>] <port> <protocol>` line per
ban of the last hour, which a local jail (failregex `\\[<HOST>\\]`) bans from.
"""

import argparse
import datetime
import http.client
import json
import os
import socket
import subprocess
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


def mariadb(database, sql):
    creds, rest = database.rsplit("@", 1)
    user, password = creds.split(":", 1)
    hostport, db = rest.split("/", 1)
    host, port = hostport.split(":")
    out = subprocess.run(["mariadb", "-N", "-B", "-h", host, "-P", port, "-u", user,
                          "-p" + password, db, "-e", sql],
                         capture_output=True, text=True, check=True)
    return out.stdout


def quote(text):
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def put_sql(args):
    created = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    mariadb(args.database, "INSERT INTO f2b (hostname, created, jail, protocol, port, ip, bantime) "
            "VALUES (%s)" % ", ".join(quote(v) for v in (
                args.hostname, created, args.jail, args.proto, args.port, args.ip, args.bantime)))
    return 0


def pull_sql(args):
    where = "created > NOW() - INTERVAL 1 HOUR AND hostname <> %s" % quote(args.hostname)
    if args.jail != "all":
        where += " AND jail = %s" % quote(args.jail)
    rows = mariadb(args.database, "SELECT UNIX_TIMESTAMP(created), ip, port, protocol FROM f2b "
                   "WHERE " + where)
    log = os.path.join(args.logdir, "filter-%s.log" % args.jail)
    lines = [r.split("\t") for r in rows.splitlines() if r]
    with open(log + ".tmp", "w") as out:
        for created, ip, port, protocol in lines:
            out.write("%d [%s] %s %s\n" % (int(float(created)), ip, port, protocol))
    os.replace(log + ".tmp", log)
    print(len(lines))
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
    r = sub.add_parser("put-sql")
    for name in ("database", "hostname", "jail", "proto", "port", "ip", "bantime"):
        r.add_argument(name)
    t = sub.add_parser("pull-sql")
    for name in ("database", "hostname", "jail", "logdir"):
        t.add_argument(name)
    args = parser.parse_args()
    return {"put": put, "pull": pull, "put-sql": put_sql, "pull-sql": pull_sql}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
