#!/usr/bin/env python3
"""Checks a MISP static feed written by `shared-f2b-archiver export --format misp-feed` the way
a real consumer reads it: with PyMISP.

Every event file is loaded with MISPEvent().load_file(); every object must be PyMISP's shipped
`fail2ban` template (uuid, version, relations with their attribute types, required relations)
and is rebuilt with MISPObject('fail2ban', strict=True) so PyMISP's own validation runs; the TLP
tag and the creator organisation are checked; PyMISP's feed_meta_generator, run on a copy of the
event files, must produce our manifest.json (as JSON) and hashes.csv (as a set of lines).

    check_feed.py DIR [--events N] [--objects M] [--org-name NAME] [--org-uuid UUID]
                      [--tlp TAG] [--ip IP ...] [--absent-ip IP ...]

Exits 0 and prints one line when everything holds; else prints every mismatch and exits 1.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

try:
    import pymisp
    from pymisp import MISPEvent, MISPObject
    from pymisp.tools.feed import feed_meta_generator
except ImportError as e:  # pragma: no cover - the message is the point
    sys.exit(f"check_feed.py needs PyMISP ({e}): pip install pymisp (scripts/test installs it)")


def template() -> dict:
    path = (Path(pymisp.__file__).parent / "data" / "misp-objects" / "objects" / "fail2ban"
            / "definition.json")
    with path.open() as f:
        return json.load(f)


def event_files(feed: Path) -> list[Path]:
    return sorted(p for p in feed.glob("*.json") if p.name != "manifest.json")


def check_object(obj, tpl: dict, where: str, problems: list[str]) -> None:
    if obj.name != "fail2ban":
        problems.append(f"{where}: object {obj.name!r}, not fail2ban")
        return
    if obj.template_uuid != tpl["uuid"]:
        problems.append(f"{where}: template_uuid {obj.template_uuid}, PyMISP's is {tpl['uuid']}")
    if str(obj.template_version) != str(tpl["version"]):
        problems.append(
            f"{where}: template_version {obj.template_version}, PyMISP's is {tpl['version']}")
    relations = [a.object_relation for a in obj.attributes]
    for a in obj.attributes:
        spec = tpl["attributes"].get(a.object_relation)
        if spec is None:
            problems.append(f"{where}: relation {a.object_relation!r} is not in the template")
            continue
        if a.type != spec["misp-attribute"]:
            problems.append(f"{where}: {a.object_relation} has type {a.type}, the template says "
                            f"{spec['misp-attribute']}")
        allowed = a.describe_types["category_type_mappings"].get(a.category, [])
        if a.type not in allowed:
            problems.append(f"{where}: {a.object_relation}: category {a.category!r} does not "
                            f"allow type {a.type}")
        if relations.count(a.object_relation) > 1 and not spec.get("multiple"):
            problems.append(f"{where}: {a.object_relation} appears more than once")
    for required in tpl.get("required", []):
        if required not in relations:
            problems.append(f"{where}: required relation {required} is missing")
    # PyMISP's own checks: the template by uuid and version, then required and repeated
    # relations when the object is serialised.
    try:
        strict = MISPObject("fail2ban", strict=True)
        strict.from_dict(**{"template_uuid": obj.template_uuid,
                            "template_version": obj.template_version})
        rebuilt = MISPObject("fail2ban", strict=True)
        for a in obj.attributes:
            rebuilt.add_attribute(a.object_relation, value=a.value)
        json.loads(rebuilt.to_json(strict=True))
    except Exception as e:  # noqa: BLE001 - any PyMISP refusal is a finding
        problems.append(f"{where}: PyMISP refuses the object: {type(e).__name__}: {e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("feed", type=Path)
    parser.add_argument("--events", type=int, help="expected number of event files")
    parser.add_argument("--objects", type=int, help="expected number of objects in all")
    parser.add_argument("--org-name")
    parser.add_argument("--org-uuid")
    parser.add_argument("--tlp", help="the TLP tag every event carries, e.g. tlp:amber")
    parser.add_argument("--ip", action="append", default=[], help="an address the feed bans")
    parser.add_argument("--absent-ip", action="append", default=[],
                        help="an address the feed must not hold (pardoned)")
    args = parser.parse_args()

    problems: list[str] = []
    tpl = template()
    files = event_files(args.feed)
    objects = 0
    banned: set[str] = set()
    for path in files:
        event = MISPEvent()
        try:
            event.load_file(str(path))
        except Exception as e:  # noqa: BLE001
            problems.append(f"{path.name}: PyMISP cannot load it: {type(e).__name__}: {e}")
            continue
        where = path.name
        if event.uuid != path.stem:
            problems.append(f"{where}: event uuid {event.uuid} differs from the file name")
        if not event.info.endswith(event.date.isoformat()):
            problems.append(f"{where}: info {event.info!r} does not end with the day {event.date}")
        if not event.published:
            problems.append(f"{where}: not published")
        orgc = getattr(event, "Orgc", None)
        if orgc is None:
            problems.append(f"{where}: no Orgc")
        else:
            if args.org_name and orgc.name != args.org_name:
                problems.append(f"{where}: Orgc name {orgc.name!r}, expected {args.org_name!r}")
            if args.org_uuid and orgc.uuid != args.org_uuid:
                problems.append(f"{where}: Orgc uuid {orgc.uuid}, expected {args.org_uuid}")
        tags = [t.name for t in event.tags]
        tlp = [t for t in tags if t.startswith("tlp:")]
        if len(tlp) != 1:
            problems.append(f"{where}: TLP tags {tlp}, expected exactly one")
        elif args.tlp and tlp[0] != args.tlp:
            problems.append(f"{where}: TLP tag {tlp[0]}, expected {args.tlp}")
        if event.attributes:
            problems.append(f"{where}: {len(event.attributes)} attributes outside objects")
        if not event.objects:
            problems.append(f"{where}: no objects (an event file for a day without bans)")
        for i, obj in enumerate(event.objects):
            objects += 1
            check_object(obj, tpl, f"{where} object {i} ({obj.uuid})", problems)
            banned.update(str(a.value) for a in obj.attributes if a.object_relation == "banned-ip")

    if args.events is not None and len(files) != args.events:
        problems.append(f"{len(files)} event files, expected {args.events}")
    if args.objects is not None and objects != args.objects:
        problems.append(f"{objects} objects, expected {args.objects}")
    for ip in args.ip:
        if ip not in banned:
            problems.append(f"{ip} is not in the feed")
    for ip in args.absent_ip:
        if ip in banned:
            problems.append(f"{ip} is in the feed, and should not be")

    # PyMISP's generator on a copy of the event files must give our manifest and hashes.
    ours_manifest = args.feed / "manifest.json"
    ours_hashes = args.feed / "hashes.csv"
    if not ours_manifest.is_file() or not ours_hashes.is_file():
        problems.append("manifest.json or hashes.csv is missing")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp)
            for path in files:
                shutil.copy(path, copy / path.name)
            feed_meta_generator(copy)
            theirs = json.loads((copy / "manifest.json").read_text())
            ours = json.loads(ours_manifest.read_text())
            if theirs != ours:
                for uuid in sorted(set(theirs) | set(ours)):
                    if theirs.get(uuid) != ours.get(uuid):
                        problems.append(f"manifest.json[{uuid}]: ours {ours.get(uuid)}, "
                                        f"PyMISP's {theirs.get(uuid)}")
            their_lines = set((copy / "hashes.csv").read_text().splitlines())
            our_lines = set(ours_hashes.read_text().splitlines())
            if their_lines != our_lines:
                problems.append(
                    f"hashes.csv: {len(our_lines - their_lines)} lines only in ours (e.g. "
                    f"{sorted(our_lines - their_lines)[:3]}), {len(their_lines - our_lines)} only "
                    f"in PyMISP's (e.g. {sorted(their_lines - our_lines)[:3]})")

    if problems:
        print(f"MISP feed {args.feed}: {len(problems)} problems", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"MISP feed {args.feed}: {len(files)} events, {objects} objects, PyMISP "
          f"{pymisp.__version__} loads them all and agrees on manifest.json and hashes.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
