// The construct synthesizes what template.yaml has, with least-privilege roles, and passes
// cdk-nag's AwsSolutions pack (acknowledged findings carry reasons).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Match } from 'aws-cdk-lib/assertions';
import { nagFindings, synth } from './helpers';

const { stack, template } = synth();
const json = template.toJSON();
const resources = Object.entries(json.Resources as Record<string, any>);
const ofType = (t: string) => resources.filter(([, r]) => r.Type === t);

test('both functions: arm64, provided.al2023, bootstrap, SLUICE_PIPELINE and SLUICE_LAKE', () => {
  for (const name of ['SluiceTest-transform', 'SluiceTest-redshift-loader']) {
    template.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: name,
      Runtime: 'provided.al2023',
      Architectures: ['arm64'],
      Handler: 'bootstrap',
      Timeout: 900,
      LoggingConfig: { LogFormat: 'JSON', ApplicationLogLevel: 'INFO', SystemLogLevel: 'WARN' },
      Environment: {
        Variables: {
          SLUICE_PIPELINE: 's3://sluice-lake-test/_sluice/pipeline.toml',
          SLUICE_LAKE: 's3://sluice-lake-test',
        },
      },
    });
  }
  assert.equal(ofType('AWS::Lambda::Function').length, 2, 'no other function (no notifications custom resource)');
});

test('the log groups go with the stack, as template.yaml\'s do', () => {
  const groups = ofType('AWS::Logs::LogGroup');
  assert.equal(groups.length, 2);
  for (const [id, r] of groups) assert.equal(r.DeletionPolicy, 'Delete', id);
});

test('the pipeline location must be a literal s3:// URL', () => {
  assert.throws(() => synth({ pipelineLocation: 'pipeline.toml' }), /must be s3:\/\/BUCKET\/KEY/);
});

test('raw/ -> transform, retried twice, failures to the DLQ', () => {
  template.hasResourceProperties('AWS::S3::Bucket', {
    BucketName: 'sluice-lake-test',
    NotificationConfiguration: {
      LambdaConfigurations: [Match.objectLike({
        Event: 's3:ObjectCreated:*',
        Filter: { S3Key: { Rules: [{ Name: 'prefix', Value: 'raw/' }] } },
      })],
      QueueConfigurations: [Match.objectLike({
        Event: 's3:ObjectCreated:*',
        Filter: { S3Key: { Rules: [{ Name: 'prefix', Value: 'manifests/' }, { Name: 'suffix', Value: '.json' }] } },
      })],
    },
  });
  template.hasResource('AWS::S3::Bucket', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
  template.hasResourceProperties('AWS::Lambda::Permission', {
    Principal: 's3.amazonaws.com',
    SourceAccount: '111111111111',
  });
  template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
    MaximumRetryAttempts: 2,
    MaximumEventAgeInSeconds: 21600,
    DestinationConfig: { OnFailure: { Destination: Match.anyValue() } },
  });
});

test('manifests/ -> queue (redrive to a DLQ after 20) -> redshift-loader', () => {
  template.hasResourceProperties('AWS::SQS::Queue', {
    VisibilityTimeout: 5460,
    MessageRetentionPeriod: 1209600,
    SqsManagedSseEnabled: true,
    RedrivePolicy: { maxReceiveCount: 20, deadLetterTargetArn: Match.anyValue() },
  });
  template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
    BatchSize: 100,
    MaximumBatchingWindowInSeconds: 60,
    FunctionResponseTypes: ['ReportBatchItemFailures'],
    ScalingConfig: { MaximumConcurrency: 2 },
  });
  template.resourceCountIs('AWS::SQS::Queue', 3);
});

test('Glue database and job with the script as an asset', () => {
  template.hasResourceProperties('AWS::Glue::Database', { DatabaseInput: { Name: 'sluice_test' } });
  template.hasResourceProperties('AWS::Glue::Job', {
    Name: 'sluice-transform-large',
    GlueVersion: '5.0',
    Command: { Name: 'glueetl', ScriptLocation: Match.stringLikeRegexp('^s3://.*\\.py$') },
    MaxRetries: 0,
    JobRunQueuingEnabled: true,
    DefaultArguments: Match.objectLike({ '--extra-py-files': Match.stringLikeRegexp('\\.zip$') }),
  });
});

test('every alarm, the Glue failure rule and the email subscription publish to the topic', () => {
  const alarms = ofType('AWS::CloudWatch::Alarm');
  const names = alarms.map(([id]) => id.replace(/^Sluice/, '').replace(/[0-9A-F]{8}$/, '')).sort();
  assert.deepEqual(names, [
    'ManifestDLQAlarm', 'ReconciliationMismatchAlarm', 'RedshiftLoaderErrorsAlarm', 'RedshiftLoaderThrottlesAlarm',
    'TransformDLQAlarm', 'TransformErrorsAlarm', 'TransformThrottlesAlarm',
  ]);
  const topic = ofType('AWS::SNS::Topic')[0][0];
  for (const [, a] of alarms) assert.deepEqual(a.Properties.AlarmActions, [{ Ref: topic }]);
  template.hasResourceProperties('AWS::Events::Rule', {
    EventPattern: { source: ['aws.glue'], detail: { state: ['FAILED', 'TIMEOUT', 'ERROR'] } },
    Targets: [Match.objectLike({ Arn: { Ref: topic } })],
  });
  template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com' });
});

test('no wildcard resource on data-plane actions, except the Data API statements with the owner condition', () => {
  const allowed = new Set(['redshift-data:DescribeStatement', 'redshift-data:GetStatementResult']);
  let checked = 0;
  for (const [id, r] of [...ofType('AWS::IAM::Role'), ...ofType('AWS::IAM::Policy')]) {
    const policies = r.Type === 'AWS::IAM::Role' ? r.Properties.Policies ?? [] : [r.Properties];
    for (const p of policies) {
      for (const st of p.PolicyDocument.Statement) {
        checked++;
        assert.notEqual(st.Action, '*', id);
        const actions: string[] = [].concat(st.Action);
        for (const a of actions) assert.ok(!a.includes('*'), `${id}: wildcard action ${a}`);
        const star = [].concat(st.Resource).some((x: unknown) => x === '*');
        if (!star) continue;
        for (const a of actions) assert.ok(allowed.has(a), `${id}: ${a} on *`);
        assert.deepEqual(st.Condition, { StringEquals: { 'redshift-data:statement-owner-iam-userid': '${aws:userid}' } });
      }
    }
  }
  assert.ok(checked > 20);
  assert.equal(ofType('AWS::IAM::Policy').length, 0, 'every grant is inline, as in template.yaml');
});

test('the roles follow the Redshift sign-in', () => {
  const actions = (t: typeof template) => JSON.stringify(t.toJSON());
  assert.match(actions(template), /redshift-serverless:GetCredentials/);
  const cluster = synth({ redshift: { clusterIdentifier: 'c1', dbUser: 'loader', copyRoleArn: 'arn:aws:iam::111111111111:role/copy' } }).template;
  assert.match(actions(cluster), /redshift:GetClusterCredentials/);
  assert.doesNotMatch(actions(cluster), /redshift-serverless:GetCredentials|RedshiftCopyRole/);
  assert.throws(() => synth({ redshift: { clusterIdentifier: 'c1' } }), /exactly one of redshift.secretArn or redshift.dbUser/);
  assert.throws(() => synth({ redshift: {} }), /exactly one of redshift.workgroupArn/);
});

test('an existing bucket is imported and notified through CDK', () => {
  const { template: t } = synth({ existingLakeBucket: true });
  t.resourceCountIs('AWS::S3::Bucket', 0);
  t.hasResourceProperties('Custom::S3BucketNotifications', { BucketName: 'sluice-lake-test' });
});

test('cdk-nag AwsSolutions on the existing-bucket path: no finding left unacknowledged', () => {
  const { stack: s } = synth({ existingLakeBucket: true });
  const report = nagFindings(s);
  assert.deepEqual(report.violations.map((v) => v.ruleName), []);
});

test('cdk-nag AwsSolutions: no finding left unacknowledged', () => {
  const report = nagFindings(stack);
  assert.deepEqual(report.violations.map((v) => v.ruleName), []);
  assert.equal(report.success, true);
});
