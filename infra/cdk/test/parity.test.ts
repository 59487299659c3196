// template.yaml (expanded by aws-sam-translator) and the construct deploy the same functions,
// event sources, environment names and IAM actions (test/parity.py); a template.yaml that
// drifts (a permission dropped, a variable renamed) fails the check.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { synth } from './helpers';

const TEMPLATE = path.resolve(__dirname, '..', '..', '..', 'template.yaml');
const dir = mkdtempSync(path.join(tmpdir(), 'sluice-parity-'));
const secret = 'arn:aws:secretsmanager:eu-west-1:111111111111:secret:rs-AbCdEf';
// One synthesis per Redshift sign-in: together they take every branch template.yaml's
// conditions may take.
const cdkTemplates = [
  {},
  { redshift: { clusterIdentifier: 'c1', dbUser: 'loader' } },
  { redshift: { clusterIdentifier: 'c1', secretArn: secret } },
].map((props, i) => {
  const file = path.join(dir, `cdk-${i}.json`);
  writeFileSync(file, JSON.stringify(synth(props).template.toJSON()));
  return file;
});

function parity(samTemplate: string) {
  const r = spawnSync('python3', [path.join(__dirname, 'parity.py'), samTemplate, ...cdkTemplates], { encoding: 'utf8' });
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

test('template.yaml and the construct agree', () => {
  const r = parity(TEMPLATE);
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /parity: 2 functions/);
});

test('a permission dropped from template.yaml fails the check', () => {
  const r = parity(mutated('drop-permission', (s) => s.replace(/^\s+- redshift-data:BatchExecuteStatement\n/m, '')));
  assert.equal(r.status, 1, r.out);
  assert.match(r.out, /redshift-loader: actions redshift-data:batchexecutestatement in the CDK app only/);
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

test('a Redshift sign-in permission dropped from the construct side fails the check', () => {
  const r = spawnSync('python3', [path.join(__dirname, 'parity.py'), TEMPLATE, cdkTemplates[0]], { encoding: 'utf8' });
  assert.equal(r.status, 1, r.stdout);
  assert.match(r.stdout, /redshift-loader: actions redshift:getclustercredentials in template.yaml only/);
});
