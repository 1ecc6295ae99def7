"""The ValueFlows export is linked data: JSON-LD processors read every term of it.

Two independent JSON-LD implementations read the export of a real period: PyLD (the
JSON-LD 1.1 reference algorithms in Python) expands it, and rdflib's own JSON-LD parser
turns it into RDF triples.  Expansion keeps only what the ``@context`` maps, so a term
the context forgot disappears there; the two tools agreeing on the triples shows the
document means one thing.  The names are ValueFlows' (https://w3id.org/valueflows/ont/vf#,
as its vf-graphql schema spells them: EconomicEvent with action, provider, receiver,
resourceInventoriedAs, effortQuantity and resourceQuantity as om2 measures with
hasNumericalValue and hasUnit, hasPointInTime or hasBeginning and hasEnd, inScopeOf).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import rdflib
from pyld import jsonld

from hub.ledger.export import collect, to_valueflows
from tests.hub.ledger.test_export import sm  # the production-effort week, closed  # noqa: F401

VF = "https://w3id.org/valueflows/ont/vf#"
OM2 = "http://www.ontology-of-units-of-measure.org/resource/om-2/"
XSD = "http://www.w3.org/2001/XMLSchema#"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"


def _export(sm: Any) -> dict[str, Any]:  # noqa: F811
    with sm() as s:
        # through JSON, as `peershop export --format valueflows` writes it
        return json.loads(json.dumps(to_valueflows(collect(s, period_id=1))))


def _nodes(expanded: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {node["@id"]: node for node in expanded}


def _one(node: dict[str, Any], prop: str) -> dict[str, Any]:
    [value] = node[prop]
    return value


def test_every_event_keeps_who_what_how_much_and_when_after_expansion(sm):  # noqa: F811
    doc = _export(sm)
    nodes = _nodes(jsonld.expand(doc))
    events = [n for n in nodes.values() if n.get("@type") == [VF + "EconomicEvent"]]
    assert len(events) == 11  # 4 work, 6 use, 1 consume
    for event in events:
        action = _one(event, VF + "action")["@id"]
        assert action in {VF + "work", VF + "use", VF + "consume"}, event["@id"]
        # who: a provider and a receiver, each an agent the document declares
        for role in ("provider", "receiver", "inScopeOf"):
            agent = _one(event, VF + role)["@id"]
            assert nodes[agent]["@type"][0] in {VF + "Person", VF + "Organization"}
        # how much: an om2 measure with a number and a declared unit
        quantities = [p for p in ("effortQuantity", "resourceQuantity") if VF + p in event]
        assert quantities, event["@id"]
        for prop in quantities:
            measure = _one(event, VF + prop)
            assert isinstance(_one(measure, OM2 + "hasNumericalValue")["@value"], float)
            unit = _one(measure, OM2 + "hasUnit")["@id"]
            assert nodes[unit]["@type"] == [OM2 + "Unit"], unit
        # when: typed instants
        times = [p for p in ("hasPointInTime", "hasBeginning", "hasEnd") if VF + p in event]
        assert times in (["hasPointInTime"], ["hasBeginning", "hasEnd"]), event["@id"]
        for prop in times:
            assert _one(event, VF + prop)["@type"] == XSD + "dateTime"
        if action == VF + "work":
            assert _one(event, VF + "effortQuantity")[OM2 + "hasUnit"] == [{"@id": OM2 + "hour"}]
            weight = _one(event, "urn:peershop:weight")
            assert weight["@type"] == XSD + "decimal" and float(weight["@value"]) > 0
        if action == VF + "use":
            tool = _one(event, VF + "resourceInventoriedAs")["@id"]
            assert nodes[tool]["@type"] == [VF + "EconomicResource"]


def test_no_term_is_dropped(sm):  # noqa: F811
    """Every property of every node survives expansion: the context maps them all."""
    doc = _export(sm)
    for node in doc["@graph"]:
        [kept] = jsonld.expand({"@context": doc["@context"], **node})
        assert len(kept) == len(node), (node, kept)
        for key, value in node.items():  # the measures inside an event too
            if isinstance(value, dict):
                [inner] = next(v for k, v in kept.items() if k.endswith(key))
                assert len(inner) == len(value), (key, value, inner)


def test_a_second_json_ld_tool_reads_the_same_triples(sm):  # noqa: F811
    doc = _export(sm)
    by_pyld = jsonld.to_rdf(doc, {"format": "application/n-quads"}).strip().splitlines()
    with warnings.catch_warnings():
        # rdflib 7.5+'s own JSON-LD parser still builds a ConjunctiveGraph inside and
        # warns about it (the suite turns warnings into errors); nothing of ours is
        # deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        by_rdflib = rdflib.Graph().parse(data=json.dumps(doc), format="json-ld")
    assert len(by_rdflib) == len(by_pyld)
    # and rdflib sees the events as ValueFlows events with their actions
    vf = rdflib.Namespace(VF)
    events = set(by_rdflib.subjects(rdflib.RDF.type, vf.EconomicEvent))
    assert len(events) == 11
    actions = {by_rdflib.value(e, vf.action) for e in events}
    assert actions == {vf.work, vf.use, vf.consume}
