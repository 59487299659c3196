//! `scripts/check-aws-ops`, the check of `template.yaml` against the code, on a small
//! workspace of its own (one function crate, a template, recorded operations and the list of
//! what tests cannot observe) and on the real template: it passes when they agree, and fails
//! naming the problem when a permission, a variable, a binary or a reason goes missing or a
//! permission too many is granted.

use std::path::{Path, PathBuf};
use std::process::Command;

use sluice_tests::workspace_root;

const TEMPLATE: &str = r#"AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Conditions:
  Uploads: !Equals [!Ref AWS::Region, us-east-1]
Globals:
  Function:
    Environment:
      Variables:
        DEMO_PIPELINE: !Sub s3://${AWS::StackName}/pipeline.toml
Resources:
  DemoFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
      BuildProperties:
        Binary: demo
    Properties:
      CodeUri: functions/demo
      Role: !GetAtt DemoFunctionRole.Arn
      Environment:
        Variables:
          DEMO_TABLE: orders
  DemoFunctionRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: { Service: lambda.amazonaws.com }
            Action: sts:AssumeRole
      Policies:
        - PolicyName: demo
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Sid: Logs
                Effect: Allow
                Action: logs:PutLogEvents
                Resource: !Sub arn:${AWS::Partition}:logs:*:*:*
              - Sid: Read
                Effect: Allow
                Action:
                  - s3:GetObject
                  - s3:ListBucket
                Resource:
                  - !Sub arn:${AWS::Partition}:s3:::bucket
                  - !Sub arn:${AWS::Partition}:s3:::bucket/raw/*
              - !If
                - Uploads
                - Sid: Write
                  Effect: Allow
                  Action:
                    - s3:PutObject
                  Resource: !Sub arn:${AWS::Partition}:s3:::bucket/curated/*
                - !Ref AWS::NoValue
              - Sid: NeverMind
                Effect: Deny
                Action: s3:DeleteBucket
                Resource: "*"
"#;

const OPS: &str = "demo s3:GetObject
demo s3:ListObjectsV2
demo s3:HeadObject
demo s3:CompleteMultipartUpload
demo_test s3:CreateBucket
demo_test s3:DeleteObject
";

const LIST: &str = r#"[[operation]]
function = "demo"
action = "logs:PutLogEvents"
reason = "the Lambda service writes the logs with the function's role"

[[env]]
name = "DEMO_ENDPOINT"
reason = "local runs only"
"#;

/// The small workspace: shared/ with the variable-name constants, the `demo` function crate
/// reading three variables (one only in its tests), and the template, ops and list files.
fn workspace(dir: &Path) {
    let files = [
        (
            "shared/src/lib.rs",
            "pub const TABLE_ENV: &str = \"DEMO_TABLE\";\n\
             pub fn endpoint() -> Option<String> { std::env::var(\"DEMO_ENDPOINT\").ok() }\n",
        ),
        (
            "shared/src/lambda.rs",
            "pub const PIPELINE_ENV: &'static str = \"DEMO_PIPELINE\";\n\
             fn env_var(var: &'static str) -> Option<String> { std::env::var(var).ok() }\n\
             pub fn pipeline() -> Option<String> { env_var(PIPELINE_ENV) }\n\
             #[cfg(test)]\nmod tests {\n    fn f() { if true { let _ = std::env::var(\"DEMO_TEST_ONLY\"); } }\n}\n",
        ),
        (
            "functions/demo/Cargo.toml",
            "[package]\nname = \"demo-crate\"\nversion = \"0.1.0\"\n\n[[bin]]\nname = \"demo\"\npath = \"src/main.rs\"\n",
        ),
        (
            "functions/demo/src/main.rs",
            "use shared::TABLE_ENV;\nfn main() { let _ = std::env::var_os(TABLE_ENV); }\n",
        ),
        (
            "functions/demo/src/tests.rs",
            "fn t() { let _ = std::env::var(\"DEMO_ALSO_TEST_ONLY\"); }\n",
        ),
        ("template.yaml", TEMPLATE),
        ("ops.txt", OPS),
        ("infra/aws-operations.toml", LIST),
    ];
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

struct Outcome {
    code: Option<i32>,
    out: String,
}

fn script() -> PathBuf {
    workspace_root().join("scripts/check-aws-ops")
}

/// Runs the check on `root` (its template.yaml, infra/aws-operations.toml) with `ops`.
fn check(root: &Path, template: &Path, ops: &[&Path]) -> Outcome {
    let out = Command::new("python3")
        .arg(script())
        .arg("--root")
        .arg(root)
        .arg("--template")
        .arg(template)
        .args(ops)
        .output()
        .expect("run python3 scripts/check-aws-ops");
    Outcome {
        code: out.status.code(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The fixture with `edit` applied to the file `name`; returns the check's outcome.
fn mutated(name: &str, edit: impl Fn(&str) -> String) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    workspace(dir.path());
    let p = dir.path().join(name);
    let text = std::fs::read_to_string(&p).unwrap();
    let changed = edit(&text);
    assert_ne!(changed, text, "the edit of {name} changed nothing");
    std::fs::write(&p, changed).unwrap();
    check(
        dir.path(),
        &dir.path().join("template.yaml"),
        &[&dir.path().join("ops.txt")],
    )
}

fn assert_fails(o: &Outcome, code: i32, expected: &[&str]) {
    assert_eq!(o.code, Some(code), "{}", o.out);
    for e in expected {
        assert!(o.out.contains(e), "expected {e:?} in:\n{}", o.out);
    }
}

#[test]
fn the_fixture_template_matches_its_code() {
    let dir = tempfile::tempdir().unwrap();
    workspace(dir.path());
    let o = check(
        dir.path(),
        &dir.path().join("template.yaml"),
        &[&dir.path().join("ops.txt")],
    );
    assert_eq!(o.code, Some(0), "{}", o.out);
    assert!(
        o.out
            .contains("not checked: 2 operations of `demo_test` (not a function"),
        "{}",
        o.out
    );
}

#[test]
fn a_permission_dropped_or_added_fails_the_check() {
    // The upload's permission (CompleteMultipartUpload needs s3:PutObject).
    let o = mutated("template.yaml", |t| {
        t.replace(
            "                    - s3:PutObject\n",
            "                    - s3:GetObject\n",
        )
    });
    assert_fails(
        &o,
        1,
        &["demo: s3:PutObject is needed (called (s3:CompleteMultipartUpload)) but role DemoFunctionRole does not allow it"],
    );
    // A listed action.
    let o = mutated("template.yaml", |t| {
        t.replace("Action: logs:PutLogEvents", "Action: logs:CreateLogStream")
    });
    assert_fails(
        &o,
        1,
        &[
            "demo: logs:PutLogEvents is needed (listed) but role DemoFunctionRole does not allow it",
            "allows logs:CreateLogStream (statement Logs), which no test saw it call",
        ],
    );
    // One more than the code needs, also when only a test binary called it.
    let o = mutated("template.yaml", |t| {
        t.replace(
            "- s3:ListBucket\n",
            "- s3:ListBucket\n                  - s3:DeleteObject\n",
        )
    });
    assert_fails(
        &o,
        1,
        &["role DemoFunctionRole allows s3:DeleteObject (statement Read)"],
    );
    // A wildcard.
    let o = mutated("template.yaml", |t| {
        t.replace("- s3:GetObject", "- s3:Get*")
    });
    assert_fails(&o, 1, &["allows the wildcard action s3:Get*"]);
    // Nothing recorded for the function: everything it was seen calling is now unneeded.
    let o = mutated("ops.txt", |t| t.replace("demo s3:", "other s3:"));
    assert_fails(
        &o,
        1,
        &["allows s3:GetObject (statement Read), which no test saw"],
    );
}

#[test]
fn variables_binaries_and_reasons_are_checked() {
    let o = mutated("template.yaml", |t| {
        t.replace("DEMO_TABLE: orders", "OTHER: x")
    });
    assert_fails(
        &o,
        1,
        &["demo: the code reads DEMO_TABLE (functions/demo/src/main.rs), which the template does not set"],
    );
    let o = mutated("template.yaml", |t| {
        t.replace("DEMO_PIPELINE: !Sub", "OTHER: !Sub")
    });
    assert_fails(
        &o,
        1,
        &["the code reads DEMO_PIPELINE (shared/src/lambda.rs)"],
    );
    let o = mutated("infra/aws-operations.toml", |t| {
        t.replace("name = \"DEMO_ENDPOINT\"", "name = \"OTHER\"")
    });
    assert_fails(&o, 1, &["the code reads DEMO_ENDPOINT (shared/src/lib.rs)"]);
    let o = mutated("template.yaml", |t| {
        t.replace("Binary: demo", "Binary: dmeo")
    });
    assert_fails(
        &o,
        1,
        &[
            "DemoFunction: functions/demo builds no binary `dmeo`",
            "functions/demo builds `demo`, which is no function of",
        ],
    );
    let o = mutated("template.yaml", |t| {
        t.replace("CodeUri: functions/demo", "CodeUri: functions/gone")
    });
    assert_fails(
        &o,
        1,
        &["DemoFunction: CodeUri functions/gone has no Cargo.toml"],
    );
    let o = mutated("template.yaml", |t| {
        t.replace(
            "Role: !GetAtt DemoFunctionRole.Arn",
            "Policies: [AWSLambdaBasicExecutionRole]",
        )
    });
    assert_fails(&o, 2, &["DemoFunction: needs an explicit role"]);
    let o = mutated("infra/aws-operations.toml", |t| {
        t.replace(
            "reason = \"the Lambda service writes the logs with the function's role\"",
            "reason = \" \"",
        )
    });
    assert_fails(
        &o,
        2,
        &["an [[operation]] needs exactly function, action and a reason"],
    );
    let o = mutated("ops.txt", |t| format!("{t}demo\n"));
    assert_fails(&o, 2, &["expected '<owner> <service>:<Operation>'"]);
}

/// The real template (issue 8 adds it): every permission it grants is read by the check —
/// with the template's own actions as the recorded operations it passes, and a copy without
/// any one of them fails naming it. Its crates and variables match the code.
#[test]
fn every_permission_of_the_real_template_is_load_bearing() {
    let root = workspace_root();
    let template = root.join("template.yaml");
    assert!(
        template.is_file(),
        "{} is missing (the deployable suite's SAM template)",
        template.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .arg(script())
        .arg("--root")
        .arg(&root)
        .arg("--print-allowed")
        .output()
        .expect("run scripts/check-aws-ops --print-allowed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let allowed = String::from_utf8(out.stdout).unwrap();
    let ops = dir.path().join("ops.txt");
    std::fs::write(&ops, &allowed).unwrap();
    let o = check(&root, &template, &[&ops]);
    assert_eq!(o.code, Some(0), "{}", o.out);

    // Each action, dropped from every statement that grants it (a role may grant one action
    // in several statements, on different resources; the check compares actions only).
    let text = std::fs::read_to_string(&template).unwrap();
    let actions: std::collections::BTreeSet<&str> = allowed
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, a)| a))
        .collect();
    for action in &actions {
        let mut found = false;
        let copy_text: Vec<String> = text
            .lines()
            .map(|line| {
                let item = line.trim_start();
                if item == format!("- {action}") || item == format!("Action: {action}") {
                    found = true;
                    line.replace(action, "iam:SluiceTestDropped")
                } else {
                    line.to_string()
                }
            })
            .collect();
        assert!(
            found,
            "{action} is allowed but no line `- {action}` or `Action: {action}` grants it"
        );
        let copy = dir.path().join("template.yaml");
        std::fs::write(&copy, copy_text.join("\n")).unwrap();
        let o = check(&root, &copy, &[&ops]);
        assert_eq!(o.code, Some(1), "without {action}: {}", o.out);
        assert!(
            o.out
                .contains(&format!("{action} is needed (called ({action}))")),
            "without {action}: {}",
            o.out
        );
    }
    assert!(
        actions.len() >= 10,
        "only {} actions found in the template",
        actions.len()
    );
}
