#!/usr/bin/env node
// Example app: one stack holding the Sluice construct, configured by context values
// (`npx cdk deploy -c lakeBucketName=... -c pipelineLocation=... ...`; README "Deploying with CDK").
import { App, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import { AwsSolutionsChecks } from 'cdk-nag';
import { Sluice } from '../lib/sluice';

const app = new App();
const ctx = (name: string): string | undefined => {
  const v = app.node.tryGetContext(name);
  return v === undefined || v === '' ? undefined : String(v);
};
const required = (name: string): string => {
  const v = ctx(name);
  if (v === undefined) throw new Error(`context ${name} is required: -c ${name}=...`);
  return v;
};
const num = (name: string): number | undefined => {
  const v = ctx(name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`context ${name} must be a number, not ${v}`);
  return n;
};

const list = (name: string): string[] | undefined => ctx(name)?.split(',').map((s) => s.trim()).filter((s) => s !== '');
const seconds = (name: string): Duration | undefined => {
  const n = num(name);
  return n === undefined ? undefined : Duration.seconds(n);
};
const streamMode = ctx('cdcStreamMode');
if (streamMode !== undefined && !['PROVISIONED', 'ON_DEMAND'].includes(streamMode)) {
  throw new Error(`context cdcStreamMode must be PROVISIONED or ON_DEMAND, not ${streamMode}`);
}
const schedule = ctx('cdcSchedule');
const extractSchedule = ctx('extractSchedule');

const stack = new Stack(app, ctx('stackName') ?? 'sluice', {
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
});
new Sluice(stack, 'Sluice', {
  lakeBucketName: required('lakeBucketName'),
  existingLakeBucket: ctx('existingLakeBucket') === 'true',
  pipelineLocation: required('pipelineLocation'),
  glueDatabaseName: required('glueDatabaseName'),
  glueJobName: ctx('glueJobName'),
  hashKeySecretArn: ctx('hashKeySecretArn'),
  redshift: {
    workgroupArn: ctx('redshiftWorkgroupArn'),
    clusterIdentifier: ctx('redshiftClusterIdentifier'),
    database: ctx('redshiftDatabase'),
    secretArn: ctx('redshiftSecretArn'),
    dbUser: ctx('redshiftDbUser'),
    copyRoleArn: ctx('redshiftCopyRoleArn'),
  },
  alarmEmail: ctx('alarmEmail'),
  rawRetentionDays: num('rawRetentionDays'),
  quarantineRetentionDays: num('quarantineRetentionDays'),
  loadsRetentionDays: num('loadsRetentionDays'),
  transformMemorySize: num('transformMemorySize'),
  loaderMemorySize: num('loaderMemorySize'),
  // The CDC path with -c cdc=true (README "Deploying with CDK").
  cdc: ctx('cdc') === 'true' ? {
    streamMode: streamMode as kinesis.StreamMode | undefined,
    shardCount: num('cdcShardCount'),
    schedule: schedule === undefined ? undefined : events.Schedule.expression(schedule),
    decoderTimeout: seconds('cdcDecoderTimeoutSeconds'),
    sourceSecretArn: ctx('cdcSourceSecretArn'),
    subnetIds: list('cdcSubnetIds'),
    securityGroupIds: list('cdcSecurityGroupIds'),
    slotLagAlarmBytes: num('cdcSlotLagAlarmBytes'),
    iteratorAgeAlarm: seconds('cdcIteratorAgeAlarmSeconds'),
  } : undefined,
  // Extraction from OLTP shards with -c extract=true (README "Deploying with CDK").
  extract: ctx('extract') === 'true' ? {
    schedule: extractSchedule === undefined ? undefined : events.Schedule.expression(extractSchedule),
    timeout: seconds('extractTimeoutSeconds'),
    memorySize: num('extractMemorySize'),
    shardSecretArns: list('extractShardSecretArns'),
    subnetIds: list('extractSubnetIds'),
    securityGroupIds: list('extractSecurityGroupIds'),
    lagAlarm: seconds('extractLagAlarmSeconds'),
  } : undefined,
});
if (ctx('nag') !== 'false') Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
