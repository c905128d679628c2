"""Validates CloudWatch PutMetricAlarm inputs against the AWS API model (botocore's service
model): types, required members, minimums and string enums, plus the documented rules the model
does not encode. Emulators accept any alarm, so this is the check that a definition would be
accepted by AWS.

usage: validate_put_metric_alarm.py FILE.json ...          (put-metric-alarm --cli-input-json)
       validate_put_metric_alarm.py --cfn TEMPLATE.json     (every AWS::CloudWatch::Alarm in it,
                                                             parameters at their defaults)
Prints one line per alarm ("OK name" or "INVALID name: reasons"); exits 1 if any is invalid.
"""
import json
import sys

import botocore.session
from botocore.validate import ParamValidator

SHAPE = botocore.session.get_session().get_service_model("cloudwatch").operation_model("PutMetricAlarm").input_shape
PLACEHOLDER_ARN = "arn:aws:sns:us-east-1:123456789012:kiro-cost-alerts"


def enum_errors(shape, value, path, errors):
    if shape.type_name == "structure" and isinstance(value, dict):
        for k, v in value.items():
            if k in shape.members:
                enum_errors(shape.members[k], v, f"{path}.{k}", errors)
    elif shape.type_name == "list" and isinstance(value, list):
        for i, v in enumerate(value):
            enum_errors(shape.member, v, f"{path}[{i}]", errors)
    elif shape.type_name == "string" and shape.enum and value not in shape.enum:
        errors.append(f"{path}: {value!r} is not one of {shape.enum}")


def documented_rules(a, errors):
    if ("MetricName" in a) == ("Metrics" in a):
        errors.append("exactly one of MetricName and Metrics")
    if "MetricName" in a:
        if ("Statistic" in a) == ("ExtendedStatistic" in a):
            errors.append("exactly one of Statistic and ExtendedStatistic")
        if "Namespace" not in a or "Period" not in a:
            errors.append("a single-metric alarm needs Namespace and Period")
    period, evaluations = a.get("Period"), a.get("EvaluationPeriods")
    if period is not None and not (period in (10, 20, 30) or period % 60 == 0):
        errors.append(f"Period {period}: must be 10, 20, 30 or a multiple of 60")
    if period and evaluations and period * evaluations > 86400:
        errors.append("Period x EvaluationPeriods must be at most 86,400 seconds")
    if a.get("DatapointsToAlarm") and evaluations and a["DatapointsToAlarm"] > evaluations:
        errors.append("DatapointsToAlarm must not exceed EvaluationPeriods")
    for k in ("AlarmActions", "OKActions", "InsufficientDataActions"):
        if len(a.get(k, [])) > 5:
            errors.append(f"{k}: at most 5 actions")
    if len(a.get("Dimensions", [])) > 30:
        errors.append("at most 30 dimensions")


def validate(name, params):
    errors = []
    report = ParamValidator().validate(params, SHAPE)
    if report.has_errors():
        errors.append(report.generate_report().replace("\n", "; "))
    enum_errors(SHAPE, params, "", errors)
    documented_rules(params, errors)
    print(("OK " + name) if not errors else f"INVALID {name}: " + " | ".join(errors))
    return not errors


def resolve(value, defaults):
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return defaults[value["Ref"]]
        if set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"].replace("${AWS::StackName}", "kiro-cost")
            for name, default in defaults.items():
                text = text.replace("${%s}" % name, str(default))
            return text
        return {k: resolve(v, defaults) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, defaults) for v in value]
    return value


def main(argv):
    ok = True
    if argv[:1] == ["--cfn"]:
        template = json.load(open(argv[1]))
        defaults = {k: p.get("Default", PLACEHOLDER_ARN) for k, p in template.get("Parameters", {}).items()}
        alarms = {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
        if not alarms:
            print("INVALID template: no AWS::CloudWatch::Alarm")
            return 1
        for name, r in alarms.items():
            ok &= validate(name, resolve(r["Properties"], defaults))
    else:
        for path in argv:
            ok &= validate(path, json.load(open(path)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
