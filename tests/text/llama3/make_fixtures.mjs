// Writes a Llama 3 tokenizer.json (Hugging Face format) from the vocabulary and merges that
// the llama3-tokenizer-js package embeds, with the tokenizer_config.json and
// generation_config.json of a Llama 3 Instruct checkpoint: the files a user of
// facebook/layerskip-llama3.2-1B brings. Generated at test time into OUTDIR (they are
// ~9 MB: not committed).
//   usage: node make_fixtures.mjs OUTDIR
import fs from 'node:fs';
import path from 'node:path';
import { Llama3Tokenizer } from 'llama3-tokenizer-js';
import { LLAMA3_SPLIT_REGEX, LLAMA3_CHAT_TEMPLATE } from './reference.mjs';

const out = process.argv[2];
if (!out) throw new Error('usage: node make_fixtures.mjs OUTDIR');
fs.mkdirSync(out, { recursive: true });

const ref = new Llama3Tokenizer();
const byId = ref.vocabById;  // 128000 BPE pieces, then the 256 special tokens
if (byId.length !== 128256) throw new Error(`expected 128256 tokens, got ${byId.length}`);
const vocab = {};
for (let i = 0; i < 128000; ++i) vocab[byId[i]] = i;
// The package keeps merges as a Map "left right" -> priority; priority order is rank order.
const merges = [...ref.merges.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k);

const added = [];
for (let i = 128000; i < 128256; ++i)
  added.push({ id: i, content: byId[i], single_word: false, lstrip: false, rstrip: false,
               normalized: false, special: true });

// The layout of Meta's Llama 3 tokenizer.json.
const tokenizer = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: added,
  normalizer: null,
  pre_tokenizer: {
    type: 'Sequence',
    pretokenizers: [
      { type: 'Split', pattern: { Regex: LLAMA3_SPLIT_REGEX }, behavior: 'Isolated',
        invert: false },
      { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  },
  post_processor: {
    type: 'Sequence',
    processors: [
      { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
      {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } },
                 { Sequence: { id: 'A', type_id: 0 } }],
        pair: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } },
               { Sequence: { id: 'A', type_id: 0 } },
               { SpecialToken: { id: '<|begin_of_text|>', type_id: 1 } },
               { Sequence: { id: 'B', type_id: 1 } }],
        special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [128000],
                                                 tokens: ['<|begin_of_text|>'] } },
      },
    ],
  },
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null,
    end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: true,
    vocab, merges,
  },
};
fs.writeFileSync(path.join(out, 'tokenizer.json'), JSON.stringify(tokenizer));
fs.writeFileSync(path.join(out, 'tokenizer_config.json'), JSON.stringify({
  add_bos_token: true, add_eos_token: false, bos_token: '<|begin_of_text|>',
  eos_token: '<|eot_id|>', chat_template: LLAMA3_CHAT_TEMPLATE,
  model_max_length: 131072, tokenizer_class: 'PreTrainedTokenizerFast',
}, null, 2));
// Llama 3.x Instruct: config.json names one EOS id, generation_config.json the three ids
// (<|end_of_text|>, <|eom_id|>, <|eot_id|>) that end a reply.
fs.writeFileSync(path.join(out, 'generation_config.json'), JSON.stringify({
  bos_token_id: 128000, eos_token_id: [128001, 128008, 128009], do_sample: true,
  temperature: 0.6, top_p: 0.9,
}, null, 2));
console.log(`wrote ${out}/tokenizer.json (${byId.length} tokens, ${merges.length} merges)`);
