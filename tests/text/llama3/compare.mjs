// Compares eexit's C++ Llama 3 tokenizer (loaded from tokenizer.json and from a vocab-only
// GGUF, through llama3_tok_driver) with two implementations nobody here wrote:
// llama3-tokenizer-js (its own BPE over the vocabulary and merges it embeds) and
// @huggingface/tokenizers (runs the tokenizer.json). Ids must be equal on every case, and
// decode(encode(x)) == x.
//   usage: node compare.mjs DRIVER FIXTURE_DIR SHAKESPEARE.txt
// Cases: tinyshakespeare (every line, and ~4 KB chunks cut at line ends), hand-written
// Unicode / whitespace / digit / contraction / special-token strings, and seeded random
// strings: valid UTF-8 (code points from mixed pools) and raw random bytes.
// Ill-formed UTF-8: the npm libraries take JS strings, so raw bytes cannot reach them. A
// random byte string is therefore used twice: (1) its raw bytes, C++ only: the tokens'
// bytes must concatenate back to the input exactly (byte-level BPE is lossless) and decode
// must equal the WHATWG decoder's output (TextDecoder: one U+FFFD per maximal ill-formed
// subpart, the rule decode() documents); (2) the string that survives decoding (with its
// U+FFFD), compared with everything like any other case.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Tokenizer } from '@huggingface/tokenizers';
import llama3js from 'llama3-tokenizer-js';

const [driver, fixtures, shakespeare] = process.argv.slice(2);
if (!shakespeare) throw new Error('usage: node compare.mjs DRIVER FIXTURE_DIR SHAKESPEARE.txt');
const t0 = performance.now();
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8');  // not fatal: U+FFFD per maximal subpart
const hex = (u8) => Buffer.from(u8).toString('hex');

// ---- the cases -------------------------------------------------------------------------
const cases = [];  // {name, bytes: Uint8Array, text: string | null (null: C++ only)}
const addText = (name, text) => cases.push({ name, bytes: enc.encode(text), text });

const shake = fs.readFileSync(shakespeare, 'utf8');
const lines = shake.split(/(?<=\n)/);
lines.forEach((l, i) => addText(`shakespeare line ${i + 1}`, l));
for (let i = 0, k = 0; i < shake.length; ++k) {
  let j = shake.indexOf('\n', i + 4096);
  j = j < 0 ? shake.length : j + 1;
  addText(`shakespeare chunk ${k}`, shake.slice(i, j));
  i = j;
}
const nShakespeare = cases.length;

const hand = [
  '', ' ', '  ', '\n', '\n\n', '\n\n\n\n', '\r\n', '\r\n\r\n', ' \n', '\n ', '\t\t\tx', 'a  \n  b',
  'x    y', 'trailing   ', '   leading', ' \t \n \n\t  word', 'a\u00a0b', '\u3000全角\u3000',
  '1', '12', '123', '1234', '12345', '1234567890', '3.14159265358979', '-42,000,000.00', 'v1.2.3',
  'x1y22z333w4444', '٣٤٥٦٧', '１２３４', '²³¹ ½ ⅓', '①②③④⑤', 'Ⅻ ⅻ',
  "it's", "IT'S", "we'll", "WE'LL", "I'm", "you're", "they've", "he'd", "don't", "DON'T",
  "'s", "'", "''", "'x", "rock 'n' roll", "O'Neill's", "‘curly’ quotes", "it’s",
  'Hello, world!', 'hello.world', '@user #tag $100 %50 ^_^ &&|| ~~', '<html><body>x</body></html>',
  'def f(x):\n    return x**2\n\n\nprint(f(3))\n', '{"a": [1, 2, {"b": null}]}',
  'naïve café résumé', 'Ελληνικά κείμενο', 'Русский текст, ёжик', 'עברית', 'العربية مرحبا',
  '中文分词测试。你好，世界！', '日本語のテキスト、カタカナ', '한국어 텍스트', 'ไทย ภาษา',
  'हिन्दी भाषा नमस्ते', 'தமிழ்', 'ქართული', 'Ꭰ Ꮳ', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙',
  '😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷', 'emoji😀in😀words', '🤖 robots 🤖🤖🤖',
  'e\u0301 a\u0308 n\u0303', 'Zalgo: Z\u0351\u0352\u0353a\u0354\u0355l\u0356g\u0357o', 'x\u200bzero\u200dwidth\u200c',
  '\ufeffBOM', 'soft\u00adhyphen', 'control\u0001\u0002\u001f', '\u0085next line', 'line\u2028sep\u2029para',
  '\u00a0\u00a0\u00a0', '🙂\n\n🙂', '…—–', '«»„“', '¿¡', '½¼', 'ß ẞ ﬁ ﬂ', 'İ ı', 'µ ª º',
  '<|begin_of_text|>', '<|eot_id|>', 'a<|eot_id|>b', '<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>',
  '<|begin_of_text|><|begin_of_text|>', '<|reserved_special_token_247|>', '<|reserved_special_token_248|>',
  '<|eot_id', 'eot_id|>', '<|not_a_token|>', '<|python_tag|>print(1)<|eom_id|>', ' <|eot_id|> ',
  '<|end_of_text|>\n', 'x<|finetune_right_pad_id|>y',
];
hand.forEach((t, i) => addText(`hand ${i}: ${JSON.stringify(t).slice(0, 40)}`, t));
const nHand = hand.length;

// mulberry32: a seeded generator, so a failure reproduces.
let seed = 0x11a3a3;
const rnd = () => {
  seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = (a) => a[Math.floor(rnd() * a.length)];
const range = (lo, hi) => lo + Math.floor(rnd() * (hi - lo + 1));
const pools = [
  () => range(0x20, 0x7e), () => range(0x20, 0x7e), () => pick([0x20, 0x20, 0x0a, 0x09, 0x0d]),
  () => range(0x30, 0x39), () => pick([0x27, 0x73, 0x74, 0x6c, 0x4c, 0x53]),  // ' s t l L S
  () => range(0xa0, 0x24f), () => range(0x300, 0x36f), () => range(0x370, 0x52f),
  () => range(0x590, 0x6ff), () => range(0x900, 0xdff), () => range(0x1100, 0x11ff),
  () => range(0x2000, 0x2bff), () => range(0x3000, 0x30ff), () => range(0x4e00, 0x9fff),
  () => range(0xac00, 0xd7a3), () => range(0xfe00, 0xfffd), () => range(0x1f300, 0x1faff),
  () => range(0x10000, 0x10ffff), () => { const c = range(0x80, 0xfffd); return c >= 0xd800 && c < 0xe000 ? 0x41 : c; },
];
const nRandom = 300, nBytes = 200;
for (let k = 0; k < nRandom; ++k) {
  let s = '';
  const len = range(1, 60);
  for (let i = 0; i < len; ++i) {
    const c = pick(pools)();
    s += String.fromCodePoint(c >= 0xd800 && c < 0xe000 ? 0xfffd : c);
  }
  addText(`random ${k}`, s);
}
const rawCases = [];
for (let k = 0; k < nBytes; ++k) {
  const b = new Uint8Array(range(1, 40));
  for (let i = 0; i < b.length; ++i)  // bias towards UTF-8 lead/continuation bytes and ASCII
    b[i] = rnd() < 0.3 ? range(0x20, 0x7e) : rnd() < 0.5 ? range(0x80, 0xbf) : range(0xc0, 0xff);
  cases.push({ name: `bytes ${k} (raw)`, bytes: b, text: null });
  rawCases.push(cases.length - 1);
  addText(`bytes ${k} (as decoded)`, dec.decode(b));
}

// ---- eexit -----------------------------------------------------------------------------
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'eexit-llama3-'));
const caseFile = path.join(tmp, 'cases.hex');
fs.writeFileSync(caseFile, cases.map((c) => hex(c.bytes)).join('\n') + '\n');
const tc = performance.now();
const cpp = execFileSync(driver, [path.join(fixtures, 'tokenizer.json'), path.join(fixtures, 'vocab.gguf'), caseFile],
  { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'inherit'] }).toString().trim().split('\n').map((l) => JSON.parse(l));
const tcDone = performance.now();
fs.rmSync(tmp, { recursive: true });
if (cpp.length !== cases.length) throw new Error(`driver printed ${cpp.length} lines for ${cases.length} cases`);

// ---- the references --------------------------------------------------------------------
const readJson = (f) => JSON.parse(fs.readFileSync(path.join(fixtures, f), 'utf8'));
const hfjs = new Tokenizer(readJson('tokenizer.json'), readJson('tokenizer_config.json'));

const failures = [];
const fail = (c, what, detail) => failures.push(`${c.name}: ${what}\n    text ${JSON.stringify(c.text ?? hex(c.bytes))}\n    ${detail}`);
const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
const show = (ids) => JSON.stringify(ids.map((i) => [i, hfjs.decode([i])]));
let nCompared = 0, nIds = 0, tRef = 0, nJsSpace = 0;
const specials = /<\|(?:begin_of_text|end_of_text|start_header_id|end_header_id|eot_id|eom_id|python_tag|finetune_right_pad_id|reserved_special_token_(?:[0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-3][0-9]|24[0-7]))\|>/g;
cases.forEach((c, i) => {
  const r = cpp[i];
  const g = r.g ?? r.j;
  if (!r.b) fail(c, 'the tokens\' bytes do not concatenate to the input', `ids ${show(r.j)}`);
  if (r.g) fail(c, 'tokenizer.json and GGUF ids differ', `json ${show(r.j)}\n    gguf ${show(g)}`);
  if (r.dg === false) fail(c, 'the GGUF tokenizer decodes differently', '');
  const decoded = Buffer.from(r.d, 'hex').toString('latin1');
  if (c.text === null) {  // raw bytes: C++ only
    const want = Buffer.from(enc.encode(dec.decode(c.bytes))).toString('latin1');
    if (decoded !== want) fail(c, 'decode differs from the WHATWG decoder', `got ${r.d}`);
    return;
  }
  const want = Buffer.from(enc.encode(c.text.replace(specials, ''))).toString('latin1');
  if (decoded !== want) fail(c, 'decode(encode(x)) != x (special tokens dropped)', `got ${JSON.stringify(dec.decode(Buffer.from(r.d, 'hex')))}`);
  // JavaScript's \s has U+FEFF and lacks U+0085; the Rust regex engines of HF tokenizers and
  // tiktoken (and eexit) use Unicode's White_Space, the other way round. The references
  // split such strings differently by design: checked C++-only (text/tokenizer_test.cpp
  // pins eexit's splits of them).
  if (/[\u0085\ufeff]/.test(c.text)) {
    ++nJsSpace;
    return;
  }
  const t = performance.now();
  const a = hfjs.encode(c.text).ids;
  const b = llama3js.encode(c.text, { bos: true, eos: false });
  tRef += performance.now() - t;
  if (!same(a, b)) fail(c, 'the two npm references disagree', `@huggingface/tokenizers ${show(a)}\n    llama3-tokenizer-js     ${show(b)}`);
  if (!same(r.j, a)) fail(c, 'eexit differs from @huggingface/tokenizers', `eexit ${show(r.j)}\n    hf    ${show(a)}`);
  if (!same(r.j, b)) fail(c, 'eexit differs from llama3-tokenizer-js', `eexit ${show(r.j)}\n    l3js  ${show(b)}`);
  const hd = hfjs.decode(a, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  if (hd !== c.text.replace(specials, '')) fail(c, '@huggingface/tokenizers\' own decode differs', JSON.stringify(hd));
  ++nCompared;
  nIds += r.j.length;
});

const s = (ms) => (ms / 1000).toFixed(1) + ' s';
console.log(`cases: ${cases.length} (${nShakespeare} tinyshakespeare lines/chunks, ${nHand} hand-written, ` +
  `${nRandom} random UTF-8, ${nBytes} random byte strings raw + ${nBytes} as decoded)`);
console.log(`compared with both references: ${nCompared} strings, ${nIds} ids each from eexit (tokenizer.json, GGUF), ` +
  `@huggingface/tokenizers and llama3-tokenizer-js; ${rawCases.length} raw byte strings checked C++-only, and ${nJsSpace} strings with U+0085/U+FEFF (JS \\s differs)`);
console.log(`time: eexit ${s(tcDone - tc)}, references ${s(tRef)}, total ${s(performance.now() - t0)}`);
if (failures.length) {
  console.log(`${failures.length} FAILURES; the first 40:`);
  for (const f of failures.slice(0, 40)) console.log('  ' + f);
  process.exit(1);
}
console.log('all equal');
