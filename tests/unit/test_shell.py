"""The kopf shell's pure parts: which watches are filtered server-side, and what a reconcile observes."""

from __future__ import annotations

import kopf
from kopf._cogs.structs.references import Resource

from negrl_operator.controller.shell import observe
from negrl_operator.controller.watch import CHILD_RESOURCES, EVENT_SELECTOR, configure_watches
from negrl_operator.reconcile.manifest import Owner
from negrl_operator.reconcile.observation import JobState, PodReport, Problem


def resource(group: str, version: str, plural: str) -> Resource:
    return Resource(group, version, plural, kind=plural.title()[:-1], namespaced=True)


def test_every_child_watch_is_filtered_by_the_api_server():
    settings = kopf.OperatorSettings()
    configure_watches(settings)
    for spec in CHILD_RESOURCES:
        group, version, plural = ("", *spec) if len(spec) == 2 else spec
        selectors = list(settings.watching.label_selectors.collect(resource(group, version, plural)))
        assert selectors == ["app.kubernetes.io/managed-by=negrl-operator"], spec
    assert list(settings.watching.field_selectors.collect(resource("", "v1", "events"))) == [EVENT_SELECTOR]
    experiments = resource("negrl.io", "v1alpha1", "negrlexperiments")
    assert not list(settings.watching.label_selectors.collect(experiments))  # experiments carry no such label
    assert not list(settings.watching.label_selectors.collect(resource("events.k8s.io", "v1", "events")))


def test_observe_keeps_this_experiments_children_and_their_failed_create_events():
    owner = Owner("exp", "team", "uid-new")
    mine = JobState("exp-data-prepare", "prepare", owner_uid="uid-new", uid="job-1")
    predecessor = JobState("exp-trainer-sft", "sft", owner_uid="uid-old", uid="job-0")
    pods = [PodReport("p1", "exp-data-prepare", owner_uid="job-1"), PodReport("p0", "exp-trainer-sft", owner_uid="job-0"),
            PodReport("s1", "", policy="sft", owner_uid="rs-1")]
    quota = Problem("FailedCreate", "exceeded quota")
    observed = observe(owner, {("team", "exp"): [mine, predecessor]}, {}, {}, {("team", "exp"): pods},
                       {("team", "exp-data-prepare"): [quota], ("team", "exp-trainer-sft"): [quota]})
    assert list(observed.jobs) == ["exp-data-prepare"]
    assert [pod.name for pod in observed.pods] == ["p1", "s1"]
    assert observed.job_events == {"exp-data-prepare": quota}
