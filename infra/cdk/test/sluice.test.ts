// The construct synthesizes what template.yaml has, with least-privilege roles, and passes
// cdk-nag's AwsSolutions pack (acknowledged findings carry reasons).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { Duration } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import { nagFindings, synth } from './helpers';

const { stack, template } = synth();
const json = template.toJSON();
const ofTypeIn = (j: any, t: string) => Object.entries(j.Resources as Record<string, any>).filter(([, r]) => r.Type === t);
const ofType = (t: string) => ofTypeIn(json, t);

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

// Lambda's network-interface actions for wal-decoder in a VPC: Describe* take no resource.
const ENI_ACTIONS = [
  'ec2:CreateNetworkInterface', 'ec2:DescribeNetworkInterfaces', 'ec2:DescribeSubnets',
  'ec2:DeleteNetworkInterface', 'ec2:AssignPrivateIpAddresses', 'ec2:UnassignPrivateIpAddresses',
];
const CDC_VPC = {
  sourceSecretArn: 'arn:aws:secretsmanager:eu-west-1:111111111111:secret:source-AbCdEf',
  subnetIds: ['subnet-0123456789abcdef0', 'subnet-0fedcba9876543210'],
  securityGroupIds: ['sg-0123456789abcdef0'],
};

test('no wildcard resource on data-plane actions, except the Data API statements with the owner condition', () => {
  const allowed = new Set(['redshift-data:DescribeStatement', 'redshift-data:GetStatementResult']);
  const eni = new Set(ENI_ACTIONS);
  const withCdc = Object.entries(synth({ cdc: CDC_VPC }).template.toJSON().Resources as Record<string, any>);
  const rolesAndPolicies = withCdc.filter(([, r]) => r.Type === 'AWS::IAM::Role' || r.Type === 'AWS::IAM::Policy');
  let checked = 0;
  let eniSeen = 0;
  for (const [id, r] of rolesAndPolicies) {
    const policies = r.Type === 'AWS::IAM::Role' ? r.Properties.Policies ?? [] : [r.Properties];
    for (const p of policies) {
      for (const st of p.PolicyDocument.Statement) {
        checked++;
        assert.notEqual(st.Action, '*', id);
        const actions: string[] = [].concat(st.Action);
        for (const a of actions) assert.ok(!a.includes('*'), `${id}: wildcard action ${a}`);
        const star = [].concat(st.Resource).some((x: unknown) => x === '*');
        if (!star) continue;
        if (actions.every((a) => eni.has(a))) {
          assert.deepEqual(actions, ENI_ACTIONS, id);
          assert.match(id, /WalDecoderFunctionRole/);
          eniSeen++;
          continue;
        }
        for (const a of actions) assert.ok(allowed.has(a), `${id}: ${a} on *`);
        assert.deepEqual(st.Condition, { StringEquals: { 'redshift-data:statement-owner-iam-userid': '${aws:userid}' } });
      }
    }
  }
  assert.ok(checked > 30);
  assert.equal(eniSeen, 1);
  assert.equal(rolesAndPolicies.filter(([, r]) => r.Type === 'AWS::IAM::Policy').length, 0, 'every grant is inline, as in template.yaml');
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

// ---- the CDC path (cdc) -------------------------------------------------------------------

const cdc = synth({ cdc: CDC_VPC });
const cdcJson = cdc.template.toJSON();
const logical = (t: Template, type: string, pattern: RegExp) => {
  const ids = Object.entries(t.toJSON().Resources as Record<string, any>)
    .filter(([id, r]) => r.Type === type && pattern.test(id)).map(([id]) => id);
  assert.equal(ids.length, 1, `${type} ${pattern}: ${ids}`);
  return ids[0];
};

test('cdc: wal-decoder runs alone on a schedule, in the VPC, with the stream it puts to', () => {
  const stream = logical(cdc.template, 'AWS::Kinesis::Stream', /CdcStream/);
  const fn = logical(cdc.template, 'AWS::Lambda::Function', /WalDecoderFunction/);
  cdc.template.hasResourceProperties('AWS::Lambda::Function', {
    FunctionName: 'SluiceTest-wal-decoder',
    Runtime: 'provided.al2023',
    Architectures: ['arm64'],
    Timeout: 300,
    MemorySize: 512,
    ReservedConcurrentExecutions: 1,
    VpcConfig: { SubnetIds: CDC_VPC.subnetIds, SecurityGroupIds: CDC_VPC.securityGroupIds },
    Environment: {
      Variables: {
        SLUICE_PIPELINE: 's3://sluice-lake-test/_sluice/pipeline.toml',
        SLUICE_LAKE: 's3://sluice-lake-test',
        SLUICE_CDC_STREAM: { Ref: stream },
      },
    },
  });
  cdc.template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
    FunctionName: { Ref: fn }, MaximumRetryAttempts: 0, MaximumEventAgeInSeconds: 60,
  });
  cdc.template.hasResourceProperties('AWS::Events::Rule', {
    ScheduleExpression: 'rate(1 minute)',
    Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [fn, 'Arn'] } })],
  });
  cdc.template.hasResourceProperties('AWS::Kinesis::Stream', {
    StreamModeDetails: { StreamMode: 'PROVISIONED' },
    ShardCount: 1,
    RetentionPeriodHours: 24,
    StreamEncryption: { EncryptionType: 'KMS', KeyId: 'alias/aws/kinesis' },
  });
  assert.equal(ofTypeIn(cdcJson, 'AWS::Lambda::Function').length, 4);
});

test('cdc: cdc-sink reads the stream from the start, reports item failures, bisects, then gives up to an encrypted DLQ', () => {
  const stream = logical(cdc.template, 'AWS::Kinesis::Stream', /CdcStream/);
  const dlq = logical(cdc.template, 'AWS::SQS::Queue', /CdcSinkDLQ/);
  const fn = logical(cdc.template, 'AWS::Lambda::Function', /CdcSinkFunction/);
  cdc.template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
    FunctionName: { Ref: fn },
    EventSourceArn: { 'Fn::GetAtt': [stream, 'Arn'] },
    StartingPosition: 'TRIM_HORIZON',
    BatchSize: 1000,
    MaximumBatchingWindowInSeconds: 30,
    FunctionResponseTypes: ['ReportBatchItemFailures'],
    BisectBatchOnFunctionError: true,
    MaximumRetryAttempts: 10,
    DestinationConfig: { OnFailure: { Destination: { 'Fn::GetAtt': [dlq, 'Arn'] } } },
  });
  const sink = cdcJson.Resources[fn].Properties;
  assert.equal(sink.VpcConfig, undefined, 'cdc-sink runs outside the VPC');
  assert.equal(sink.ReservedConcurrentExecutions, undefined);
  assert.deepEqual(Object.keys(sink.Environment.Variables).sort(), ['SLUICE_LAKE', 'SLUICE_PIPELINE']);
  assert.deepEqual(cdcJson.Resources[dlq].Properties, { MessageRetentionPeriod: 1209600, SqsManagedSseEnabled: true });
});

test('cdc: slot lag, iterator age, errors and the DLQ alarm to the topic', () => {
  const names = ofTypeIn(cdcJson, 'AWS::CloudWatch::Alarm').map(([id]) => id.replace(/^Sluice/, '').replace(/[0-9A-F]{8}$/, ''));
  for (const n of ['CdcIteratorAgeAlarm', 'CdcSinkDLQAlarm', 'CdcSinkErrorsAlarm', 'CdcSlotLagAlarm', 'WalDecoderErrorsAlarm']) {
    assert.ok(names.includes(n), n);
  }
  cdc.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Namespace: 'Sluice', MetricName: 'SlotLagBytes', Dimensions: [{ Name: 'Function', Value: 'wal-decoder' }],
    Statistic: 'Maximum', Threshold: 1024 ** 3, EvaluationPeriods: 3, ComparisonOperator: 'GreaterThanThreshold',
  });
  cdc.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Namespace: 'AWS/Lambda', MetricName: 'IteratorAge', Statistic: 'Maximum', Threshold: 600000,
  });
  const topic = ofTypeIn(cdcJson, 'AWS::SNS::Topic')[0][0];
  for (const [, a] of ofTypeIn(cdcJson, 'AWS::CloudWatch::Alarm')) assert.deepEqual(a.Properties.AlarmActions, [{ Ref: topic }]);
});

test('cdc: no VPC, no secret and an on-demand stream when asked; bad combinations refused', () => {
  const { template: t } = synth({ cdc: { streamMode: kinesis.StreamMode.ON_DEMAND, decoderTimeout: Duration.seconds(600) } });
  const role = t.toJSON().Resources[logical(t, 'AWS::IAM::Role', /WalDecoderFunctionRole/)];
  const sids = role.Properties.Policies[0].PolicyDocument.Statement.map((st: { Sid: string }) => st.Sid);
  assert.deepEqual(sids, ['Logs', 'ReadPipeline', 'CdcState', 'Spill', 'ListLake', 'PutChanges']);
  assert.doesNotMatch(JSON.stringify(t.toJSON()), /VpcConfig/);
  t.hasResourceProperties('AWS::Kinesis::Stream', { StreamModeDetails: { StreamMode: 'ON_DEMAND' }, ShardCount: Match.absent() });
  t.hasResourceProperties('AWS::Lambda::Function', { FunctionName: 'SluiceTest-wal-decoder', Timeout: 600 });
  assert.throws(() => synth({ cdc: { subnetIds: ['subnet-0123456789abcdef0'] } }), /subnetIds and cdc.securityGroupIds go together/);
  assert.throws(() => synth({ cdc: { streamMode: kinesis.StreamMode.ON_DEMAND, shardCount: 2 } }), /PROVISIONED stream only/);
});

test('cdc: the spill/ prefix expires with raw/', () => {
  cdc.template.hasResourceProperties('AWS::S3::Bucket', {
    LifecycleConfiguration: { Rules: Match.arrayWith([Match.objectLike({ Id: 'expire-spill', Prefix: 'spill/', ExpirationInDays: 30 })]) },
  });
});

test('cdk-nag AwsSolutions with the CDC path in a VPC: no finding left unacknowledged', () => {
  const report = nagFindings(cdc.stack);
  assert.deepEqual(report.violations.map((v) => v.ruleName), []);
});

// ---- extract -------------------------------------------------------------------------------

const EXTRACT_VPC = {
  shardSecretArns: ['arn:aws:secretsmanager:eu-west-1:111111111111:secret:shard-eu1-AbCdEf'],
  subnetIds: ['subnet-0123456789abcdef0'],
  securityGroupIds: ['sg-0123456789abcdef0'],
};
const ex = synth({ extract: EXTRACT_VPC });
const exJson = ex.template.toJSON();

test('extract: one run at a time on an hourly schedule, in the VPC, retried twice', () => {
  const fn = logical(ex.template, 'AWS::Lambda::Function', /ExtractFunction/);
  ex.template.hasResourceProperties('AWS::Lambda::Function', {
    FunctionName: 'SluiceTest-extract',
    Runtime: 'provided.al2023',
    Architectures: ['arm64'],
    Handler: 'bootstrap',
    Timeout: 900,
    MemorySize: 1024,
    ReservedConcurrentExecutions: 1,
    VpcConfig: { SubnetIds: EXTRACT_VPC.subnetIds, SecurityGroupIds: EXTRACT_VPC.securityGroupIds },
    Environment: { Variables: { SLUICE_PIPELINE: 's3://sluice-lake-test/_sluice/pipeline.toml', SLUICE_LAKE: 's3://sluice-lake-test' } },
  });
  ex.template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
    FunctionName: { Ref: fn }, MaximumRetryAttempts: 2, MaximumEventAgeInSeconds: 1800,
  });
  ex.template.hasResourceProperties('AWS::Events::Rule', {
    ScheduleExpression: 'rate(1 hour)',
    Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [fn, 'Arn'] } })],
  });
  assert.equal(ofTypeIn(exJson, 'AWS::Lambda::Function').length, 3);
});

test('extract: its role writes raw/ and state/extract/ only, reads the shard secrets, never deletes', () => {
  const role = exJson.Resources[logical(ex.template, 'AWS::IAM::Role', /ExtractFunctionRole/)];
  const statements = role.Properties.Policies[0].PolicyDocument.Statement;
  assert.deepEqual(statements.map((st: { Sid: string }) => st.Sid),
    ['Logs', 'ReadPipeline', 'RawParts', 'ExtractState', 'ListLake', 'ShardSecrets', 'VpcNetworkInterfaces']);
  const text = JSON.stringify(statements);
  assert.doesNotMatch(text, /DeleteObject/);
  const secrets = statements.find((st: { Sid: string }) => st.Sid === 'ShardSecrets');
  assert.deepEqual(secrets.Resource, EXTRACT_VPC.shardSecretArns[0]);
  const plain = synth({ extract: {} }).template;
  const plainRole = plain.toJSON().Resources[logical(plain, 'AWS::IAM::Role', /ExtractFunctionRole/)];
  assert.deepEqual(plainRole.Properties.Policies[0].PolicyDocument.Statement.map((st: { Sid: string }) => st.Sid),
    ['Logs', 'ReadPipeline', 'RawParts', 'ExtractState', 'ListLake']);
  assert.doesNotMatch(JSON.stringify(plain.toJSON()), /VpcConfig/);
  assert.throws(() => synth({ extract: { subnetIds: ['subnet-0123456789abcdef0'] } }), /extract.subnetIds and extract.securityGroupIds go together/);
});

test('extract: errors and the lag (ExtractLagSeconds over every table and shard) alarm to the topic', () => {
  const topic = ofTypeIn(exJson, 'AWS::SNS::Topic')[0][0];
  ex.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Namespace: 'AWS/Lambda', MetricName: 'Errors', Threshold: 1,
    Dimensions: [{ Name: 'FunctionName', Value: { Ref: logical(ex.template, 'AWS::Lambda::Function', /ExtractFunction/) } }],
  });
  ex.template.hasResourceProperties('AWS::CloudWatch::Alarm', {
    Metrics: [Match.objectLike({ Expression: Match.stringLikeRegexp('MAX\\(ExtractLagSeconds\\) FROM SCHEMA\\("Sluice", "Function", "Table", "Shard"\\)'), Period: 3600 })],
    Threshold: 10800,
    ComparisonOperator: 'GreaterThanThreshold',
  });
  const names = ofTypeIn(exJson, 'AWS::CloudWatch::Alarm').map(([id]) => id.replace(/^Sluice/, '').replace(/[0-9A-F]{8}$/, ''));
  for (const n of ['ExtractErrorsAlarm', 'ExtractLagAlarm']) assert.ok(names.includes(n), n);
  for (const [, a] of ofTypeIn(exJson, 'AWS::CloudWatch::Alarm')) assert.deepEqual(a.Properties.AlarmActions, [{ Ref: topic }]);
});

test('cdk-nag AwsSolutions with extract in a VPC: no finding left unacknowledged', () => {
  const report = nagFindings(ex.stack);
  assert.deepEqual(report.violations.map((v) => v.ruleName), []);
});
