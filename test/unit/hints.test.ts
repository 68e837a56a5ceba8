/** The exit-127 hint: which tool a shell could not find, and which packs have it. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PackInfo } from '../../src/core/packs.js';
import { missingTool, missingToolHint } from '../../src/server/routes/hints.js';

const pack = (name: string, tools: string[]): PackInfo => ({ name, description: name, env: {}, run: { fileName: 'x', command: ['{file}'], projectCommand: ['x'] }, imageReady: true, tools });

describe('missing tool hint', () => {
  it('reads the tool from dash and bash messages, only for exit 127', () => {
    assert.equal(missingTool(127, Buffer.from('/bin/sh: 1: git: not found\n')), 'git');
    assert.equal(missingTool(127, Buffer.from('some output\nbash: line 3: g++: command not found\n')), 'g++');
    assert.equal(missingTool(1, Buffer.from('/bin/sh: 1: git: not found\n')), undefined);
    assert.equal(missingTool(127, Buffer.from('error: pathspec not found in the middle\nmore\n')), undefined);
  });

  it('names the packs that have it, or how to make one', () => {
    const packs = [pack('python', ['python3', 'pip']), pack('base', ['git', 'curl']), pack('mine', ['git'])];
    assert.equal(
      missingToolHint('git', 'python', packs),
      'git is not in pack python; packs base, mine have it, or a custom pack can add it (POST /v1/packs with "base": "python" and its Debian package; see images/packs/README.md)',
    );
    assert.match(missingToolHint('curl', 'python', packs), /^curl is not in pack python; pack base has it, or/);
    assert.match(missingToolHint('frob', 'python', packs), /^frob is not in pack python; a custom pack can add it/);
  });
});
