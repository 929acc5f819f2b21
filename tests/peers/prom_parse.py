"""Parses Prometheus text exposition from stdin with the reference Python
parser (prometheus_client, Debian's python3-prometheus-client) and prints it
as JSON: {"families": {NAME: {"type": T, "help": H}}, "samples":
[[NAME, {LABEL: VALUE}, VALUE], ...]}. Exits non-zero on any parse error,
and on a family without HELP text (the parser calls that "untyped" with no
documentation).

Usage: prom_parse.py < metrics.txt
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
samples = []
try:
    for f in text_string_to_metric_families(sys.stdin.read()):
        if not f.documentation:
            sys.exit(f"family {f.name} has no HELP")
        if f.type == "unknown":
            sys.exit(f"family {f.name} has no TYPE")
        families[f.name] = {"type": f.type, "help": f.documentation}
        for s in f.samples:
            samples.append([s.name, s.labels, s.value])
except ValueError as e:
    sys.exit(f"parse error: {e}")
json.dump({"families": families, "samples": samples}, sys.stdout)
