"""Prints the app databag an `otlp` provider publishes, made by the interface's own library.

Run by tests/it/otlp_relation.rs with target/test-venv's Python: a provider charm (an
OpenTelemetry collector, say) built on `charmlibs.interfaces.otlp.OtlpProvider`, as leader,
related to our charm, adds the endpoints given as JSON on the command line (each the keyword
arguments of `add_endpoint`) and publishes them. What ops saved in its app databag is printed as
JSON, exactly as `relation-get --app --format=json` would show it to our charm.
"""

import json
import sys

import ops
from charmlibs.interfaces.otlp import OtlpProvider
from ops.testing import Harness

META = """
name: otelcol
provides:
  receive-otlp:
    interface: otlp
"""


class Collector(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        self.otlp = OtlpProvider(self, relation_name="receive-otlp")


def main() -> None:
    harness = Harness(Collector, meta=META)
    harness.set_model_name("cos")
    harness.set_leader(True)
    relation_id = harness.add_relation("receive-otlp", "myapp")
    harness.begin()
    for endpoint in json.loads(sys.argv[1]):
        harness.charm.otlp.add_endpoint(**endpoint)
    harness.charm.otlp.publish()
    print(json.dumps(harness.get_relation_data(relation_id, "otelcol")))


if __name__ == "__main__":
    main()
