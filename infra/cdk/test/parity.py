#!/usr/bin/env python3
"""Compares template.yaml (expanded by aws-sam-translator) with synthesized CDK templates.

    parity.py SAM_TEMPLATE CDK_TEMPLATE.json...

For each function (keyed by its binary: SAM's Metadata.BuildProperties.Binary, the CDK
function's Metadata "Sluice:Binary"), both sides must have the same event sources (S3
notifications with their filters, the SQS mapping with its settings and queue settings, the
asynchronous invoke config), the same environment variable names, and the same IAM actions
on the function's role (inline policies and AWS::IAM::Policy resources; both branches of
Fn::If; managed policies named as such). Several CDK templates (one per Redshift sign-in) are
united, as the branches of template.yaml's conditions are. Exit 0 when equal, 1 with one line
per difference.
"""
import json
import os
import sys

# The translator needs a region for its pseudo parameters; none is reached.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from samtranslator.translator.transform import transform  # noqa: E402
from samtranslator.yaml_helper import yaml_parse  # noqa: E402


class NoManagedPolicies:
    def load(self):
        return {}


def ref_id(v):
    """Logical id named by a Ref or GetAtt (X.Arn), else None."""
    if isinstance(v, dict):
        if "Ref" in v:
            return v["Ref"]
        if "Fn::GetAtt" in v:
            g = v["Fn::GetAtt"]
            return g[0] if isinstance(g, list) else g.split(".")[0]
    return None


def statements(doc):
    """Allow statements, both branches of Fn::If."""
    out = []
    for st in doc.get("Statement", []):
        if isinstance(st, dict) and "Fn::If" in st:
            out += [b for b in st["Fn::If"][1:] if isinstance(b, dict) and "Action" in b]
        elif isinstance(st, dict):
            out.append(st)
    return [s for s in out if s.get("Effect") == "Allow"]


def role_actions(resources, role):
    r = resources[role]["Properties"]
    docs = [p["PolicyDocument"] for p in r.get("Policies", [])]
    for res in resources.values():
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            roles = [ref_id(x) for x in res["Properties"].get("Roles", [])]
            if role in roles:
                docs.append(res["Properties"]["PolicyDocument"])
    actions = set()
    for d in docs:
        for st in statements(d):
            a = st.get("Action") or []
            actions.update(x.lower() for x in ([a] if isinstance(a, str) else a))
    for m in r.get("ManagedPolicyArns", []):
        actions.add("managed-policy:" + json.dumps(m, sort_keys=True))
    return actions


def filters(cfg):
    rules = cfg.get("Filter", {}).get("S3Key", {}).get("Rules", [])
    return tuple(sorted((x["Name"].lower(), x["Value"]) for x in rules))


def describe(template, binaries):
    """{binary: {"events": set, "env": set, "actions": set}} of a plain CloudFormation template."""
    res = template["Resources"]
    out = {}
    for fid, binary in binaries.items():
        f = res[fid]["Properties"]
        events = set()
        for b in res.values():
            if b["Type"] == "AWS::S3::Bucket":
                nc = b["Properties"].get("NotificationConfiguration", {})
                for c in nc.get("LambdaConfigurations", []):
                    if ref_id(c["Function"]) == fid:
                        events.add(("s3-lambda", c["Event"], filters(c)))
                for c in nc.get("QueueConfigurations", []):
                    q = ref_id(c["Queue"])
                    for m in res.values():
                        if m["Type"] == "AWS::Lambda::EventSourceMapping" and ref_id(m["Properties"]["EventSourceArn"]) == q \
                                and ref_id(m["Properties"]["FunctionName"]) == fid:
                            events.add(("s3-queue", c["Event"], filters(c)))
        for m in res.values():
            p = m["Properties"] if "Properties" in m else {}
            if m["Type"] == "AWS::Lambda::EventSourceMapping" and ref_id(p["FunctionName"]) == fid:
                qp = res[ref_id(p["EventSourceArn"])]["Properties"]
                events.add(("sqs", p.get("BatchSize"), p.get("MaximumBatchingWindowInSeconds"),
                            tuple(p.get("FunctionResponseTypes", [])),
                            p.get("ScalingConfig", {}).get("MaximumConcurrency"),
                            qp.get("VisibilityTimeout"), qp.get("RedrivePolicy", {}).get("maxReceiveCount")))
            if m["Type"] == "AWS::Lambda::EventInvokeConfig" and ref_id(p["FunctionName"]) == fid:
                dest = p.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
                dq = ref_id(dest)
                events.add(("async", p.get("MaximumRetryAttempts"), p.get("MaximumEventAgeInSeconds"),
                            res[dq]["Type"] if dq else None))
        out[binary] = {
            "events": events,
            "env": set(f.get("Environment", {}).get("Variables", {})),
            "actions": role_actions(res, ref_id(f["Role"])),
        }
    return out


def sam_side(path):
    with open(path) as fh:
        sam = yaml_parse(fh.read())
    binaries = {k: v["Metadata"]["BuildProperties"]["Binary"] for k, v in sam["Resources"].items()
                if v["Type"] == "AWS::Serverless::Function"}
    for k in binaries:
        # What `sam package` does to a local CodeUri (the crate directory).
        sam["Resources"][k]["Properties"]["CodeUri"] = "s3://parity/" + binaries[k] + ".zip"
    cfn = transform(sam, {}, NoManagedPolicies())
    # SAM names the async config <Function>EventInvokeConfig and passes the function by Ref.
    return describe(cfn, binaries)


def cdk_side(paths):
    merged = {}
    for p in paths:
        with open(p) as fh:
            t = json.load(fh)
        binaries = {k: v["Metadata"]["Sluice:Binary"] for k, v in t["Resources"].items()
                    if v["Type"] == "AWS::Lambda::Function" and "Sluice:Binary" in v.get("Metadata", {})}
        others = [k for k, v in t["Resources"].items() if v["Type"] == "AWS::Lambda::Function" and k not in binaries]
        if others:
            merged.setdefault("<functions that are not Sluice's>", {"events": set(), "env": set(), "actions": set(others)})
        for b, d in describe(t, binaries).items():
            m = merged.setdefault(b, {"events": set(), "env": set(), "actions": set()})
            for k in m:
                m[k] |= d[k]
    return merged


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    sam, cdk = sam_side(argv[1]), cdk_side(argv[2:])
    problems = []
    for b in sorted(set(sam) | set(cdk)):
        if b not in sam:
            problems.append(f"{b}: a function of the CDK app only")
            continue
        if b not in cdk:
            problems.append(f"{b}: a function of template.yaml only")
            continue
        for k in ("events", "env", "actions"):
            for x in sorted(map(str, sam[b][k] - cdk[b][k])):
                problems.append(f"{b}: {k} {x} in template.yaml only")
            for x in sorted(map(str, cdk[b][k] - sam[b][k])):
                problems.append(f"{b}: {k} {x} in the CDK app only")
    for p in problems:
        print(p)
    if not problems:
        print(f"parity: {len(sam)} functions, same event sources, environment names and IAM actions")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
