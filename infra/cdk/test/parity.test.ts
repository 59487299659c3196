// template.yaml (expanded by aws-sam-translator) and the construct deploy the same functions,
// event sources, environment names and IAM grants (action, resource, condition) on every role
// (test/parity.py); a template.yaml that drifts (a permission dropped or widened, a condition
// removed, a variable renamed) fails the check.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Duration } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import { SluiceProps } from '../lib/sluice';
import { BASE, synth } from './helpers';

const TEMPLATE = path.resolve(__dirname, '..', '..', '..', 'template.yaml');
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-parity-'));
const secret = 'arn:aws:secretsmanager:eu-west-1:111111111111:secret:rs-AbCdEf';

/** template.yaml's parameter values (and pseudo parameters) for the deployment `props` describes. */
function parameters(props: SluiceProps): Record<string, string> {
  const rs = props.redshift;
  const cdc = props.cdc;
  const ex = props.extract;
  return {
    ...(ex ? {
      EnableExtract: 'true',
      ExtractSchedule: (ex.schedule ?? events.Schedule.rate(Duration.hours(1))).expressionString,
      ExtractTimeout: String((ex.timeout ?? Duration.seconds(900)).toSeconds()),
      ExtractMemorySize: String(ex.memorySize ?? 1024),
      ExtractShardSecretArns: (ex.shardSecretArns ?? []).join(','),
      ExtractSubnetIds: (ex.subnetIds ?? []).join(','),
      ExtractSecurityGroupIds: (ex.securityGroupIds ?? []).join(','),
    } : { EnableExtract: 'false' }),
    ...(cdc ? {
      EnableCdc: 'true',
      CdcStreamMode: cdc.streamMode ?? 'PROVISIONED',
      CdcShardCount: String(cdc.shardCount ?? 1),
      CdcSchedule: (cdc.schedule ?? events.Schedule.rate(Duration.minutes(1))).expressionString,
      CdcDecoderTimeout: String((cdc.decoderTimeout ?? Duration.seconds(300)).toSeconds()),
      CdcSourceSecretArn: cdc.sourceSecretArn ?? '',
      CdcSubnetIds: (cdc.subnetIds ?? []).join(','),
      CdcSecurityGroupIds: (cdc.securityGroupIds ?? []).join(','),
    } : { EnableCdc: 'false' }),
    'AWS::Partition': 'aws',
    'AWS::Region': 'eu-west-1',
    'AWS::AccountId': '111111111111',
    'AWS::StackName': 'SluiceTest',
    LakeBucketName: props.lakeBucketName,
    PipelineLocation: props.pipelineLocation,
    HashKeySecretArn: props.hashKeySecretArn ?? '',
    GlueDatabaseName: props.glueDatabaseName,
    RedshiftWorkgroupArn: rs.workgroupArn ?? '',
    RedshiftClusterIdentifier: rs.clusterIdentifier ?? '',
    RedshiftDatabase: rs.database ?? 'dev',
    RedshiftSecretArn: rs.secretArn ?? '',
    RedshiftDbUser: rs.dbUser ?? '',
    RedshiftCopyRoleArn: rs.copyRoleArn ?? '',
    AlarmEmail: props.alarmEmail ?? '',
  };
}

// One synthesis per Redshift sign-in (and one with a given COPY role and no hash key), each
// compared with template.yaml evaluated for the same parameter values; two with the CDC path
// and extract, with their defaults and with every option (on-demand stream, a source secret,
// shard secrets, a VPC).
const VARIANTS: Record<string, Partial<SluiceProps>> = {
  'workgroup-iam': {},
  'cluster-db-user': { redshift: { clusterIdentifier: 'c1', dbUser: 'loader' }, cdc: {}, extract: {} },
  'cluster-secret': {
    redshift: { clusterIdentifier: 'c1', secretArn: secret },
    extract: {
      schedule: events.Schedule.rate(Duration.minutes(30)),
      timeout: Duration.seconds(600),
      memorySize: 2048,
      shardSecretArns: [
        'arn:aws:secretsmanager:eu-west-1:111111111111:secret:shard-eu1-AbCdEf',
        'arn:aws:secretsmanager:eu-west-1:111111111111:secret:shard-us1-GhIjKl',
      ],
      subnetIds: ['subnet-0aaaaaaaaaaaaaaa1', 'subnet-0aaaaaaaaaaaaaaa2'],
      securityGroupIds: ['sg-0aaaaaaaaaaaaaaa1'],
    },
    cdc: {
      streamMode: kinesis.StreamMode.ON_DEMAND,
      schedule: events.Schedule.rate(Duration.minutes(5)),
      decoderTimeout: Duration.seconds(600),
      sourceSecretArn: 'arn:aws:secretsmanager:eu-west-1:111111111111:secret:source-AbCdEf',
      subnetIds: ['subnet-0123456789abcdef0', 'subnet-0fedcba9876543210'],
      securityGroupIds: ['sg-0123456789abcdef0'],
    },
  },
  'workgroup-secret-given-copy-role': {
    redshift: { ...BASE.redshift, secretArn: secret, copyRoleArn: 'arn:aws:iam::111111111111:role/copy' },
    hashKeySecretArn: undefined,
  },
};
const variants = Object.fromEntries(Object.entries(VARIANTS).map(([name, props]) => {
  const file = path.join(dir, `${name}.json`);
  const full = { ...BASE, ...props };
  writeFileSync(file, JSON.stringify({ parameters: parameters(full), template: synth(props).template.toJSON() }));
  return [name, file];
}));
const all = Object.values(variants);

function parity(samTemplate: string, files: string[] = all) {
  const r = spawnSync('python3', [path.join(__dirname, 'parity.py'), samTemplate, ...files], { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

function mutated(name: string, edit: (s: string) => string): string {
  const original = readFileSync(TEMPLATE, 'utf8');
  const changed = edit(original);
  assert.notEqual(changed, original, `the ${name} edit changed nothing`);
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(file, changed);
  return file;
}

test('template.yaml and the construct agree for every variant', () => {
  const r = parity(TEMPLATE);
  assert.equal(r.status, 0, r.out);
  for (const name of Object.keys(VARIANTS)) {
    assert.match(r.out, new RegExp(`\\[${name}\\] parity: \\d+ functions and roles`));
  }
  // Two functions and two roles (five functions with CDC and extract); the given COPY role is
  // not the stack's.
  assert.match(r.out, /\[workgroup-iam\] parity: 4 functions and roles/);
  assert.match(r.out, /\[cluster-db-user\] parity: 7 functions and roles/);
  assert.match(r.out, /\[cluster-secret\] parity: 7 functions and roles/);
  assert.match(r.out, /\[workgroup-secret-given-copy-role\] parity: 3 functions and roles/);
});

test('a permission dropped from template.yaml fails the check', () => {
  const r = parity(mutated('drop-permission', (s) => s.replace(/^\s+- redshift-data:BatchExecuteStatement\n/m, '')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /\[workgroup-iam\] redshift-loader: grants \('redshift-data:batchexecutestatement', 'arn:<partition>:redshift-serverless:<region>:<account>:workgroup\/abc', '\{\}'\) in the CDK app only/);
});

test('a resource prefix changed in template.yaml fails the check', () => {
  const r = parity(mutated('raw-prefix', (s) => s.replace(
    'Sid: ReadRaw\n                Effect: Allow\n                Action:\n                  - s3:GetObject\n                Resource: !Sub arn:${AWS::Partition}:s3:::${LakeBucketName}/raw/*',
    'Sid: ReadRaw\n                Effect: Allow\n                Action:\n                  - s3:GetObject\n                Resource: !Sub arn:${AWS::Partition}:s3:::${LakeBucketName}/*')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /transform: grants \('s3:getobject', 'arn:<partition>:s3:::<lake>\/\*', '\{\}'\) in template.yaml only/);
  assert.match(r.out, /transform: grants \('s3:getobject', 'arn:<partition>:s3:::<lake>\/raw\/\*', '\{\}'\) in the CDK app only/);
});

test('an action moved to another prefix in template.yaml fails the check', () => {
  // The loader's PutObject on loads/ becomes a PutObject on curated/.
  const r = parity(mutated('moved-action', (s) => s.replace(
    '- s3:PutObject\n                Resource:\n                  - !Sub arn:${AWS::Partition}:s3:::${LakeBucketName}/loads/*',
    '- s3:PutObject\n                Resource:\n                  - !Sub arn:${AWS::Partition}:s3:::${LakeBucketName}/curated/*')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /redshift-loader: grants \('s3:putobject', 'arn:<partition>:s3:::<lake>\/curated\/\*', '\{\}'\) in template.yaml only/);
  assert.match(r.out, /redshift-loader: grants \('s3:putobject', 'arn:<partition>:s3:::<lake>\/loads\/\*', '\{\}'\) in the CDK app only/);
});

test('the statement-owner condition removed from template.yaml fails the check', () => {
  const r = parity(mutated('no-owner-condition', (s) => s.replace(
    /(Resource: "\*"\n)\s+Condition:\n\s+StringEquals:\n\s+redshift-data:statement-owner-iam-userid: \$\{aws:userid\}\n/, '$1')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /redshift-loader: grants \('redshift-data:describestatement', '\*', '\{\}'\) in template.yaml only/);
  assert.match(r.out, /redshift-loader: grants \('redshift-data:describestatement', '\*', '\{"StringEquals": \{"redshift-data:statement-owner-iam-userid": "\$\{aws:userid\}"\}\}'\) in the CDK app only/);
});

test("a permission dropped from the Glue job's role fails the check", () => {
  const r = parity(mutated('glue-role', (s) => s.replace(
    '- s3:DeleteObject\n                  - s3:AbortMultipartUpload', '- s3:AbortMultipartUpload')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /GlueTransformJobRole: grants \('s3:deleteobject', 'arn:<partition>:s3:::<lake>\/curated\/\*', '\{\}'\) in the CDK app only/);
});

test('a widened COPY role fails the check', () => {
  const r = parity(mutated('copy-role', (s) => s.replace(
    '- !Sub arn:${AWS::Partition}:s3:::${LakeBucketName}/loads/*\n              - Sid: LocateLake',
    '- !Sub arn:${AWS::Partition}:s3:::${LakeBucketName}/*\n              - Sid: LocateLake')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /RedshiftCopyRole: grants \('s3:getobject', 'arn:<partition>:s3:::<lake>\/\*', '\{\}'\) in template.yaml only/);
});

test('a variable renamed in template.yaml fails the check', () => {
  const r = parity(mutated('rename-variable', (s) => s.replace('SLUICE_PIPELINE: !Ref PipelineLocation', 'SLUICE_PIPELINE_FILE: !Ref PipelineLocation')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /transform: env SLUICE_PIPELINE in the CDK app only/);
  assert.match(r.out, /transform: env SLUICE_PIPELINE_FILE in template.yaml only/);
});

test('a queue setting changed in template.yaml fails the check', () => {
  const r = parity(mutated('batch-size', (s) => s.replace('BatchSize: 100', 'BatchSize: 10')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /redshift-loader: events \('sqs', 10,/);
});

test('a sign-in permission missing from one variant fails the check, though the others have it', () => {
  // The workgroup synthesis compared with template.yaml evaluated for a cluster with a user:
  // the union of variants would hide this, the per-variant comparison does not.
  const file = path.join(dir, 'mismatched.json');
  const v = JSON.parse(readFileSync(variants['workgroup-iam'], 'utf8'));
  v.parameters = JSON.parse(readFileSync(variants['cluster-db-user'], 'utf8')).parameters;
  writeFileSync(file, JSON.stringify(v));
  const r = parity(TEMPLATE, [...all, file]);
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /\[mismatched\] redshift-loader: grants \('redshift:getclustercredentials', 'arn:<partition>:redshift:<region>:<account>:dbuser:c1\/loader', '\{\}'\) in template.yaml only/);
  assert.doesNotMatch(r.out, /\[workgroup-iam\] (?!parity)/);
});

test("wal-decoder's reserved concurrency dropped from template.yaml fails the check", () => {
  const r = parity(mutated('no-reserved-concurrency', (s) => s.replace(/^\s+ReservedConcurrentExecutions: 1\n/m, '')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /\[cluster-db-user\] wal-decoder: settings \('reserved-concurrency', 1\) in the CDK app only/);
  assert.doesNotMatch(r.out, /\[workgroup-iam\] (?!parity)/);
});

test("a Kinesis mapping setting changed in template.yaml fails the check", () => {
  const r = parity(mutated('no-bisect', (s) => s.replace('BisectBatchOnFunctionError: true', 'BisectBatchOnFunctionError: false')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /\[cluster-db-user\] cdc-sink: events \('AWS::Kinesis::Stream', 1000, 30, \('ReportBatchItemFailures',\), 'TRIM_HORIZON', False,/);
});

test("the VPC permissions dropped from template.yaml fail the check where wal-decoder is in a VPC", () => {
  const r = parity(mutated('no-vpc-permissions', (s) => s.replace(/^\s+- ec2:DeleteNetworkInterface\n/m, '')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /\[cluster-secret\] wal-decoder: grants \('ec2:deletenetworkinterface', '\*', '\{\}'\) in the CDK app only/);
  assert.doesNotMatch(r.out, /\[cluster-db-user\] (?!parity)/);
});

test('the VPC of wal-decoder is compared', () => {
  const r = parity(mutated('other-subnets', (s) => s.replace('SubnetIds: !Ref CdcSubnetIds', 'SubnetIds: [subnet-0aaaaaaaaaaaaaaaa]')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /\[cluster-secret\] wal-decoder: settings \('vpc', \('subnet-0aaaaaaaaaaaaaaaa',\), \('sg-0123456789abcdef0',\)\) in template.yaml only/);
});

test("extract's reserved concurrency dropped from template.yaml fails the check", () => {
  const r = parity(mutated('extract-concurrency', (s) => s.replace(
    'MemorySize: !Ref ExtractMemorySize\n      # Scheduled runs never overlap; a `sluice extract` beside them is kept apart by the\n      # shards\' leases in state/extract/.\n      ReservedConcurrentExecutions: 1\n',
    'MemorySize: !Ref ExtractMemorySize\n')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /\[cluster-db-user\] extract: settings \('reserved-concurrency', 1\) in the CDK app only/);
  assert.doesNotMatch(r.out, /wal-decoder/);
});

test("extract's state prefix widened in template.yaml fails the check", () => {
  const r = parity(mutated('extract-state', (s) => s.replace('${LakeBucketName}/state/extract/*', '${LakeBucketName}/state/*')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /\[cluster-db-user\] extract: grants \('s3:putobject', 'arn:<partition>:s3:::<lake>\/state\/\*', '\{\}'\) in template.yaml only/);
});

test("extract's shard secrets, VPC and schedule are compared", () => {
  const r = parity(mutated('extract-options', (s) => s
    .replace('Resource: !Ref ExtractShardSecretArns', 'Resource: "*"')
    .replace('SubnetIds: !Ref ExtractSubnetIds', 'SubnetIds: [subnet-0bbbbbbbbbbbbbbbb]')
    .replace('Schedule: !Ref ExtractSchedule', 'Schedule: rate(1 day)')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /\[cluster-secret\] extract: grants \('secretsmanager:getsecretvalue', '\*', '\{\}'\) in template.yaml only/);
  assert.match(r.out, /\[cluster-secret\] extract: settings \('vpc', \('subnet-0bbbbbbbbbbbbbbbb',\), \('sg-0aaaaaaaaaaaaaaa1',\)\) in template.yaml only/);
  assert.match(r.out, /\[cluster-db-user\] extract: events \('rule', 'rate\(1 day\)', 'null'\) in template.yaml only/);
});
