#!/usr/bin/env python3
"""Compares template.yaml (expanded by aws-sam-translator) with synthesized CDK templates.

    parity.py SAM_TEMPLATE VARIANT.json...

Each VARIANT.json is {"parameters": {...}, "template": {...}}: one CDK synthesis and the
template.yaml parameter values (and pseudo parameters AWS::Region, AWS::AccountId,
AWS::StackName, AWS::Partition) that describe the same deployment. template.yaml is evaluated
for those values (Conditions, Fn::If, Ref, Fn::Sub, Fn::Join, Fn::Select, Fn::Split) and
compared with that synthesis alone, so a permission dropped from one Redshift sign-in shows.

For each function (keyed by its binary: SAM's Metadata.BuildProperties.Binary, the CDK
function's Metadata "Sluice:Binary") both sides must have the same event sources (S3
notifications with their filters, the SQS or Kinesis mapping with its settings, its queue's or
stream's and its failure destination's, the asynchronous invoke config, EventBridge rules and
invoke permissions), the same settings (runtime, architecture, timeout, memory, reserved
concurrency, VPC subnets and security groups), the same environment variable names, and the
same IAM grants on the function's role. A function under a condition the parameters turn off
(EnableCdc) must be absent from the synthesis too. The Glue job's role and the COPY role are compared the same way (the CDK
role's Metadata "Sluice:Role" names template.yaml's logical id). A grant is one
(action, resource, condition) triple, every name normalised to a placeholder on both sides:
the lake bucket is <lake>, the partition, region and account are <partition>, <region>,
<account>, a resource of the stack is <LogicalId.Attribute> (CDK's logical ids lose the
construct prefix and hash), the Glue scripts are <glue-script> and <glue-rows>. Exit 0 when
equal, 1 with one line per difference.
"""
import copy
import functools
import json
import logging
import os
import re
import sys

# The translator needs a region for its pseudo parameters; none is reached.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from samtranslator.translator.transform import transform  # noqa: E402
from samtranslator.yaml_helper import yaml_parse  # noqa: E402

# The translator warns of its own (unpublished) usage metrics when they are collected.
logging.getLogger("samtranslator").setLevel(logging.ERROR)


class NoManagedPolicies:
    def load(self):
        return {}


NO_VALUE = object()


def ref_id(v):
    """Logical id named by a Ref or GetAtt (X.Arn), else None."""
    if isinstance(v, dict):
        if "Ref" in v:
            return v["Ref"]
        if "Fn::GetAtt" in v:
            g = v["Fn::GetAtt"]
            return g[0] if isinstance(g, list) else g.split(".")[0]
    return None


class Evaluator:
    """Resolves a template's intrinsic functions for given parameter values.

    A resource of the template resolves to a placeholder `<Id>` / `<Id.Attr>`; `logical`
    normalises the id (CDK's carry the construct path and a hash).
    """

    def __init__(self, template, params, logical=lambda x: x):
        self.resources = template.get("Resources", {})
        self.params = dict(params)
        for k, v in template.get("Parameters", {}).items():
            if k not in self.params and "Default" in v:
                self.params[k] = v["Default"]
            # A list parameter is a list, as CloudFormation hands it on ("" is [""]).
            if v.get("Type") == "CommaDelimitedList" and isinstance(self.params.get(k), str):
                self.params[k] = self.params[k].split(",")
        self.cond_defs = template.get("Conditions", {})
        self.conds = {}
        self.logical = logical

    def condition(self, name):
        if name not in self.conds:
            self.conds[name] = bool(self.eval(self.cond_defs[name]))
        return self.conds[name]

    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.params:
            return self.params[name]
        if name in self.resources:
            return f"<{self.logical(name)}>"
        raise KeyError(f"Ref to unknown {name}")

    def sub(self, text, local):
        def one(m):
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return str(local[name])
            if "." in name:
                rid, attr = name.split(".", 1)
                return f"<{self.logical(rid)}.{attr}>"
            return str(self.ref(name))
        return re.sub(r"\$\{([^}]+)\}", one, text)

    def eval(self, v):
        if isinstance(v, list):
            out = [self.eval(x) for x in v]
            return [x for x in out if x is not NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                return self.ref(a)
            if k == "Condition" and isinstance(a, str):
                return self.condition(a)
            if k == "Fn::GetAtt":
                rid, attr = a if isinstance(a, list) else a.split(".", 1)
                return f"<{self.logical(rid)}.{attr}>"
            if k == "Fn::If":
                return self.eval(a[1] if self.condition(a[0]) else a[2])
            if k == "Fn::Equals":
                x, y = self.eval(a)
                return x == y
            if k == "Fn::Not":
                return not self.eval(a[0])
            if k == "Fn::And":
                return all(self.eval(x) for x in a)
            if k == "Fn::Or":
                return any(self.eval(x) for x in a)
            if k == "Fn::Sub":
                if isinstance(a, str):
                    return self.sub(a, {})
                return self.sub(a[0], {n: self.eval(x) for n, x in a[1].items()})
            if k == "Fn::Join":
                return a[0].join(str(x) for x in self.eval(a[1]))
            if k == "Fn::Select":
                return self.eval(a[1])[int(self.eval(a[0]))]
            if k == "Fn::Split":
                return self.eval(a[1]).split(a[0])
        out = {}
        for k, x in v.items():
            e = self.eval(x)
            if e is not NO_VALUE:
                out[k] = e
        return out

    def present(self, res):
        """Whether a resource exists for these parameters (its Condition)."""
        c = res.get("Condition")
        return c is None or self.condition(c)


def listify(x):
    return x if isinstance(x, list) else [x]


class Names:
    """Turns the variant's concrete names into placeholders shared by both sides."""

    def __init__(self, params):
        self.pairs = [(params["LakeBucketName"], "<lake>"), (params["AWS::AccountId"], "<account>"),
                      (params["AWS::Region"], "<region>")]

    def __call__(self, s):
        if not isinstance(s, str):
            return json.dumps(s, sort_keys=True)
        s = re.sub(r"^arn:[^:]*:", "arn:<partition>:", s)
        # The Glue scripts: CDK assets (script .py, the sluice_rows zip) or GlueScriptPrefix.
        s = re.sub(r"^arn:<partition>:s3:::cdk-[^/]*-assets-[^/]*/[0-9a-f]{64}\.py$", "<glue-script>", s)
        s = re.sub(r"^arn:<partition>:s3:::cdk-[^/]*-assets-[^/]*/[0-9a-f]{64}\.zip$", "<glue-rows>", s)
        for value, name in self.pairs:
            s = s.replace(value, name)
        s = re.sub(r"^arn:<partition>:s3:::<lake>/_sluice/glue/transform_job\.py$", "<glue-script>", s)
        s = re.sub(r"^arn:<partition>:s3:::<lake>/_sluice/glue/sluice_rows\.py$", "<glue-rows>", s)
        return s


def grants(ev, names, role):
    """{(action, resource, condition)} the role's Allow statements grant; managed policies as such."""
    resources = ev.resources
    r = ev.eval(resources[role]["Properties"])
    docs = [p["PolicyDocument"] for p in r.get("Policies", [])]
    for rid, res in resources.items():
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and ev.present(res):
            p = res["Properties"]
            if role in [ref_id(x) for x in p.get("Roles", [])]:
                docs.append(ev.eval(p["PolicyDocument"]))
    out = set()
    for d in docs:
        for st in d.get("Statement", []):
            if st.get("Effect") != "Allow":
                out.add(("unexpected statement", names(st)))
                continue
            cond = names(st.get("Condition", {}))
            for a in listify(st.get("Action", [])):
                for res_ in listify(st.get("Resource", [])):
                    out.add((a.lower(), names(res_), cond))
    for m in r.get("ManagedPolicyArns", []):
        out.add(("managed-policy", names(m), ""))
    return out


def trust(ev, names, role):
    """{(action, principal, condition)} of the role's trust policy."""
    doc = ev.eval(ev.resources[role]["Properties"]["AssumeRolePolicyDocument"])
    out = set()
    for st in doc.get("Statement", []):
        cond = names(st.get("Condition", {}))
        for kind, ps in st.get("Principal", {}).items():
            for p in listify(ps):
                for a in listify(st.get("Action", [])):
                    out.add((st.get("Effect"), a.lower(), f"{kind}:{p}", cond))
    return out


def filters(cfg):
    rules = cfg.get("Filter", {}).get("S3Key", {}).get("Rules", [])
    return tuple(sorted((x["Name"].lower(), x["Value"]) for x in rules))


def mapping(ev, res, raw):
    """An event source mapping's settings, with those of its queue or stream and destination."""
    src = res[ref_id(raw["EventSourceArn"])]
    p, sp = ev.eval(raw), ev.eval(src["Properties"])
    dest = ref_id(raw.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"))
    common = (p.get("BatchSize"), p.get("MaximumBatchingWindowInSeconds"), tuple(p.get("FunctionResponseTypes", [])))
    if src["Type"] == "AWS::SQS::Queue":
        return ("sqs", *common, p.get("ScalingConfig", {}).get("MaximumConcurrency"),
                sp.get("VisibilityTimeout"), sp.get("RedrivePolicy", {}).get("maxReceiveCount"))
    return (src["Type"], *common, p.get("StartingPosition"), p.get("BisectBatchOnFunctionError"),
            p.get("MaximumRetryAttempts"), p.get("MaximumRecordAgeInSeconds"), p.get("ParallelizationFactor"),
            str(sp.get("StreamModeDetails", {}).get("StreamMode")), str(sp.get("ShardCount")),
            sp.get("RetentionPeriodHours"), json.dumps(sp.get("StreamEncryption"), sort_keys=True),
            res[dest]["Type"] if dest else None,
            json.dumps({k: ev.eval(res[dest]["Properties"]).get(k) for k in ("SqsManagedSseEnabled", "MessageRetentionPeriod")}
                       if dest else None, sort_keys=True))


def describe(ev, names, binaries, roles):
    """{key: {aspect: set}} of a plain CloudFormation template: functions by binary, roles by name."""
    res = {k: v for k, v in ev.resources.items() if ev.present(v)}
    out = {}
    for fid, binary in binaries.items():
        if fid not in res:
            continue  # under a condition these parameters turn off (EnableCdc)
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
                events.add(mapping(ev, res, p))
            if m["Type"] == "AWS::Lambda::EventInvokeConfig" and ref_id(p["FunctionName"]) == fid:
                dest = p.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
                dq = ref_id(dest)
                events.add(("async", p.get("MaximumRetryAttempts"), p.get("MaximumEventAgeInSeconds"),
                            res[dq]["Type"] if dq else None))
            if m["Type"] == "AWS::Events::Rule" and any(ref_id(t["Arn"]) == fid for t in p.get("Targets", [])):
                rule = ev.eval(p)
                events.add(("rule", rule.get("ScheduleExpression"), names(rule.get("EventPattern"))))
            if m["Type"] == "AWS::Lambda::Permission" and ref_id(p["FunctionName"]) == fid:
                src, perm = ref_id(p.get("SourceArn")), ev.eval(p)
                events.add(("invoke", perm["Principal"], res[src]["Type"] if src else names(perm.get("SourceArn")),
                            names(perm.get("SourceAccount", ""))))
        role = ref_id(f["Role"])
        settings = ev.eval(f)
        vpc = settings.get("VpcConfig", {})
        out[binary] = {
            "events": events,
            "settings": {("runtime", settings.get("Runtime"), tuple(settings.get("Architectures", []))),
                         ("timeout", str(settings.get("Timeout")), "memory", str(settings.get("MemorySize"))),
                         ("reserved-concurrency", settings.get("ReservedConcurrentExecutions")),
                         ("vpc", tuple(sorted(vpc.get("SubnetIds", []))), tuple(sorted(vpc.get("SecurityGroupIds", []))))},
            "env": set(f.get("Environment", {}).get("Variables", {})),
            "grants": grants(ev, names, role),
            "trust": trust(ev, names, role),
        }
    for name, rid in roles.items():
        out[name] = {"grants": grants(ev, names, rid), "trust": trust(ev, names, rid)}
    return out


# The roles that belong to no function: template.yaml's logical ids.
OTHER_ROLES = ("GlueTransformJobRole", "RedshiftCopyRole")


@functools.lru_cache(maxsize=None)
def translated(path):
    """template.yaml as plain CloudFormation (conditions kept) and its functions' binaries."""
    with open(path) as fh:
        sam = yaml_parse(fh.read())
    binaries = {k: v["Metadata"]["BuildProperties"]["Binary"] for k, v in sam["Resources"].items()
                if v["Type"] == "AWS::Serverless::Function"}
    for k in binaries:
        # What `sam package` does to a local CodeUri (the crate directory).
        sam["Resources"][k]["Properties"]["CodeUri"] = "s3://parity/" + binaries[k] + ".zip"
    return transform(sam, {}, NoManagedPolicies()), binaries


def sam_side(path, params):
    cfn, binaries = copy.deepcopy(translated(path))
    ev = Evaluator(cfn, params)
    roles = {r: r for r in OTHER_ROLES if r in cfn["Resources"] and ev.present(cfn["Resources"][r])}
    # SAM names the async config <Function>EventInvokeConfig and passes the function by Ref.
    return describe(ev, Names(ev.params), binaries, roles)


def cdk_logical(rid):
    """SluiceTransformDLQ1A2B3C4D -> TransformDLQ: the construct's id without path or hash."""
    return re.sub(r"^Sluice(.*?)[0-9A-F]{8}$", r"\1", rid)


def cdk_side(t, params):
    res = t["Resources"]
    binaries = {k: v["Metadata"]["Sluice:Binary"] for k, v in res.items()
                if v["Type"] == "AWS::Lambda::Function" and "Sluice:Binary" in v.get("Metadata", {})}
    roles = {v["Metadata"]["Sluice:Role"]: k for k, v in res.items()
             if v["Type"] == "AWS::IAM::Role" and "Sluice:Role" in v.get("Metadata", {})}
    ev = Evaluator(t, params, cdk_logical)
    out = describe(ev, Names(params), binaries, roles)
    others = [k for k, v in res.items() if v["Type"] == "AWS::Lambda::Function" and k not in binaries]
    if others:
        out["<functions that are not Sluice's>"] = {"grants": set(others)}
    return out


def compare(sam, cdk):
    problems = []
    for b in sorted(set(sam) | set(cdk)):
        if b not in sam:
            problems.append(f"{b}: in the CDK app only")
            continue
        if b not in cdk:
            problems.append(f"{b}: in template.yaml only")
            continue
        for k in sorted(set(sam[b]) | set(cdk[b])):
            s, c = sam[b].get(k, set()), cdk[b].get(k, set())
            for x in sorted(map(str, s - c)):
                problems.append(f"{b}: {k} {x} in template.yaml only")
            for x in sorted(map(str, c - s)):
                problems.append(f"{b}: {k} {x} in the CDK app only")
    return problems


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    problems = []
    for path in argv[2:]:
        with open(path) as fh:
            variant = json.load(fh)
        label = os.path.splitext(os.path.basename(path))[0]
        sam = sam_side(argv[1], variant["parameters"])
        cdk = cdk_side(variant["template"], variant["parameters"])
        found = compare(sam, cdk)
        problems += [f"[{label}] {p}" for p in found]
        if not found:
            print(f"[{label}] parity: {len(sam)} functions and roles, same event sources, environment names and IAM grants")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
