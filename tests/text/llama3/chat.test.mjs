// The Llama 3 chat template and stop tokens through eexit-server's /v1/chat/completions
// (node --test; run.sh chat). EEXIT_LLAMA3_DIR holds the fixtures (make_fixtures.mjs) and
// gets the tiny bigram model of make_chat_model.py, whose greedy continuations are known:
// "\n\n" -> "Hello" -> <|eot_id|>, " world" -> "!" -> <|end_of_text|>, " moon" ->
// <|eom_id|>, anything else -> ".". config.json names EOS 128001 only; 128008 and 128009
// come from generation_config.json, as in Llama 3.x Instruct checkpoints.
// The rendered prompt is compared with @huggingface/jinja running Meta's Llama 3 Instruct
// template (reference.mjs), as text and as ids (@huggingface/tokenizers), and the server's
// usage.prompt_tokens must be that many ids.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { LLAMA3_CHAT_TEMPLATE } from './reference.mjs';

const SERVER = process.env.EEXIT_SERVER;
const DIR = process.env.EEXIT_LLAMA3_DIR;
const DRIVER = process.env.EEXIT_LLAMA3_DRIVER;
if (!SERVER || !DIR || !DRIVER) throw new Error('set EEXIT_SERVER, EEXIT_LLAMA3_DIR and EEXIT_LLAMA3_DRIVER');
const here = path.dirname(new URL(import.meta.url).pathname);
const readJson = (f) => JSON.parse(fs.readFileSync(path.join(DIR, f), 'utf8'));

const conversations = [
  [{ role: 'system', content: 'You are a helpful assistant.' }, { role: 'user', content: 'Hi there!' }],
  [{ role: 'user', content: 'What is 12345 + 67890?' }],
  [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say hello.' },
   { role: 'assistant', content: 'Hello.' }, { role: 'user', content: 'Again, in 日本語 😀.' }],
  // The official template trims each message's content (Jinja's | trim).
  [{ role: 'user', content: '  \n padded message \n\n ' }, { role: 'assistant', content: '\tok\t' },
   { role: 'user', content: 'x' }],
  [{ role: 'user', content: 'text that names <|eot_id|> itself' }],
];

let server, base, rendered, hf;
before(async () => {
  if (!fs.existsSync(path.join(DIR, 'model.safetensors')))
    execFileSync('/usr/bin/python3', [path.join(here, 'make_chat_model.py'), DIR], { stdio: 'inherit' });
  hf = new Tokenizer(readJson('tokenizer.json'), readJson('tokenizer_config.json'));
  rendered = execFileSync(DRIVER, ['--chat', path.join(DIR, 'tokenizer.json')],
    { input: JSON.stringify(conversations) }).toString().trim().split('\n').map((l) => JSON.parse(l));
  server = spawn(SERVER, ['--model', DIR, '--port', '0', '--threads', '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  server.stderr.on('data', (d) => { stderr += d; });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('server did not start: ' + stderr)), 60000);
    server.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    server.on('exit', (code) => { clearTimeout(timer); reject(new Error(`server exited ${code}: ${stderr}`)); });
  });
  base = `http://127.0.0.1:${port}`;
});
after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.on('exit', r));
    server.kill('SIGTERM');
    await exited;
  }
});

const post = async (route, body) => {
  const r = await fetch(`${base}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body) });
  return { status: r.status, text: await r.text() };
};

test('the llama3 prompt equals Meta\'s template rendered by @huggingface/jinja, as text and ids', () => {
  const tmpl = new Template(LLAMA3_CHAT_TEMPLATE);
  conversations.forEach((messages, i) => {
    const want = tmpl.render({ messages, bos_token: '<|begin_of_text|>', add_generation_prompt: true });
    // format_chat leaves BOS to the tokenizer (add_special), the template writes it.
    assert.equal('<|begin_of_text|>' + rendered[i].text, want, `conversation ${i}`);
    assert.deepEqual(rendered[i].ids, hf.encode(want, { add_special_tokens: false }).ids, `conversation ${i}`);
  });
  assert.ok(rendered[0].text.startsWith('<|start_header_id|>system<|end_header_id|>\n\nYou are'));
  assert.ok(rendered[0].text.endsWith('<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n'));
});

test('chat: the server renders the llama3 template and stops at <|eot_id|>', async () => {
  for (let i = 0; i < conversations.length; ++i) {
    const r = await post('/v1/chat/completions', { messages: conversations[i], max_tokens: 16, temperature: 0 });
    assert.equal(r.status, 200, r.text);
    const j = JSON.parse(r.text);
    assert.equal(j.usage.prompt_tokens, rendered[i].ids.length, `conversation ${i}: prompt tokens`);
    assert.equal(j.choices[0].message.content, 'Hello');
    assert.equal(j.choices[0].finish_reason, 'stop');
  }
});

test('chat, streamed: "Hello", then finish_reason stop; no <|eot_id|> text', async () => {
  const r = await post('/v1/chat/completions', { messages: conversations[0], max_tokens: 16, temperature: 0,
    stream: true });
  assert.equal(r.status, 200, r.text);
  const events = r.text.split('\n').filter((l) => l.startsWith('data: ') && l !== 'data: [DONE]')
    .map((l) => JSON.parse(l.slice(6)));
  const content = events.map((e) => e.choices[0]?.delta?.content ?? '').join('');
  assert.equal(content, 'Hello');
  const finishes = events.map((e) => e.choices[0]?.finish_reason).filter((f) => f);
  assert.deepEqual(finishes, ['stop']);
  assert.ok(!r.text.includes('eot_id'));
});

test('completions: <|end_of_text|> and <|eom_id|> stop with finish_reason stop', async () => {
  for (const [prompt, text] of [['Hello world', '!'], ['To the moon', '']]) {
    const r = await post('/v1/completions', { prompt, max_tokens: 16, temperature: 0 });
    assert.equal(r.status, 200, r.text);
    const j = JSON.parse(r.text);
    assert.equal(j.choices[0].text, text, prompt);
    assert.equal(j.choices[0].finish_reason, 'stop', prompt);
    assert.ok(!j.choices[0].text.includes('<|'), prompt);
  }
});

test('control: without a stop token the model runs to max_tokens', async () => {
  const r = await post('/v1/completions', { prompt: 'abc', max_tokens: 5, temperature: 0 });
  const j = JSON.parse(r.text);
  assert.equal(j.choices[0].text, '.....');
  assert.equal(j.choices[0].finish_reason, 'length');
});
