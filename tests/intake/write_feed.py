"""Writes a MISP static feed with PyMISP's own feed tools (MISPEvent.to_feed), as MISP's
feed generator does: one <uuid>.json per event and manifest.json, for tests/integration/intake.rs.

    python write_feed.py DIR STAGE

Stage 1: event A (tags wlcg:ban, tlp:green) with ip-src 198.51.100.21 and ip-dst 198.51.100.22
for detection (to_ids), ip-src 198.51.100.23 not for detection, ip-src|port 198.51.100.25|22;
event B (tag other) with ip-src 198.51.100.24. Stage 2: event A again, newer, without
198.51.100.22.
"""

import json
import os
import sys
import uuid

from pymisp import MISPEvent, MISPOrganisation

out, stage = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)

org = MISPOrganisation()
org.name = "Test SOC"
org.uuid = "5d3b1f7e-5c3a-4a6e-9a51-0d1f0c6c0001"


def event(event_uuid, tags, attributes, timestamp):
    e = MISPEvent()
    e.uuid = event_uuid
    e.info = "intake test " + event_uuid[:8]
    e.Orgc = org
    e.distribution = 3
    e.threat_level_id = 2
    e.analysis = 2
    e.published = True
    e.date = "2026-12-03"
    for tag in tags:
        e.add_tag(tag)
    for kind, value, to_ids in attributes:
        attribute = e.add_attribute(kind, value, to_ids=to_ids, distribution=5)
        # The same attribute keeps its uuid from one stage to the next, as in MISP.
        attribute.uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, value))
    e.timestamp = timestamp
    return e


a = [("ip-src", "198.51.100.21", True), ("ip-dst", "198.51.100.22", True),
     ("ip-src", "198.51.100.23", False), ("ip-src|port", "198.51.100.25|22", True)]
if stage == 2:
    a = [x for x in a if x[1] != "198.51.100.22"]
events = [
    event("5d3b1f7e-5c3a-4a6e-9a51-0d1f0c6ca001", ["wlcg:ban", "tlp:green"], a, 1764720000 + stage),
    event("5d3b1f7e-5c3a-4a6e-9a51-0d1f0c6cb002", ["other"], [("ip-src", "198.51.100.24", True)],
          1764720000),
]
manifest = {}
for e in events:
    feed = e.to_feed(with_meta=True)
    manifest.update(feed["Event"].pop("_manifest"))
    feed["Event"].pop("_hashes", None)
    with open(os.path.join(out, e.uuid + ".json"), "w") as f:
        json.dump(feed, f, indent=2)
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
