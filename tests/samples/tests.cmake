# eexit-generate as a user runs it: JSON output on stories260K, and exit code 2 with a
# message for bad flags and values.
if(TARGET eexit-generate)
  set(_gen $<TARGET_FILE:eexit-generate>)
  set(_m ${EEXIT_SHARED_DIR}/models/stories260K/stories260K.bin)
  set(_t ${EEXIT_SHARED_DIR}/models/stories260K/tok512.bin)
  add_test(NAME samples/generate_json
    COMMAND ${_gen} --model ${_m} --tokenizer ${_t} --prompt "Once upon a time" --max-tokens 12 --json)
  set_tests_properties(samples/generate_json PROPERTIES PASS_REGULAR_EXPRESSION
    "\"finish_reason\":\"length\".*\"generated_tokens\":12.*\"text\":\", there was a little girl named Lily. She\",\"token_ids\":\\[432,383,286,261,376,298,315,421,395,317,426,338\\]")
  add_test(NAME samples/generate_stop_string
    COMMAND ${_gen} --model ${_m} --tokenizer ${_t} --prompt "Once upon a time" --stop Lily --json)
  set_tests_properties(samples/generate_stop_string PROPERTIES PASS_REGULAR_EXPRESSION
    "\"finish_reason\":\"stop\".*\"text\":\", there was a little girl named \"")
  set(_cases "--bogus|unknown flag --bogus" "--max-tokens,abc|--max-tokens: 'abc' is not an integer"
    "--temperature,-1|--temperature: -1 is outside" "--top-p,0|--top-p: 0 is outside"
    "--model|--model needs a value" "--device,tpu|--device: 'tpu' is not one of cpu, cuda"
    "--gpu-memory-fraction,0.5|--gpu-memory-fraction needs --device cuda")
  # --device cuda: a clear error where the CUDA backend is not built; where it is, its
  # flags are checked before any device is touched (so these run without a GPU too).
  if(TARGET eexit::cuda)
    list(APPEND _cases "--device,cuda,--gpu-memory-fraction,2|--gpu-memory-fraction: 2 is outside"
      "--device,cuda,--gpu-memory-fraction,0.5,--kv-blocks,8|both size the KV cache")
  else()
    list(APPEND _cases "--device,cuda|--device cuda: this build has no CUDA backend")
  endif()
  foreach(case IN LISTS _cases)
    string(REPLACE "|" ";" parts "${case}")
    list(GET parts 0 bad)
    list(GET parts 1 pattern)
    string(REPLACE "," ";" bad "${bad}")
    string(MAKE_C_IDENTIFIER "${bad}" _name)
    add_test(NAME samples/generate_rejects${_name}
      COMMAND ${CMAKE_COMMAND} -DEXPECT=2 "-DPATTERN=${pattern}"
              "-DCMD=${_gen};--prompt;x;${bad}" -P ${CMAKE_CURRENT_LIST_DIR}/expect_exit.cmake)
  endforeach()
  # No --model: the embedded model, found from the build tree's executable; --help shows
  # the search list, not this machine's source path.
  add_test(NAME samples/generate_default_model
    COMMAND ${_gen} --prompt "ROMEO:" --max-tokens 4 --policy split --json)
  set_tests_properties(samples/generate_default_model PROPERTIES PASS_REGULAR_EXPRESSION
    "\"generated_tokens\":4")
  # Self-speculation from the CLI: its stats in --json; a draft layer that is no exit point
  # is refused with the model's exit layers.
  add_test(NAME samples/generate_self_spec
    COMMAND ${_gen} --prompt "ROMEO:" --max-tokens 24 --policy self-spec --draft-exit 3
            --draft-tokens 3 --json)
  set_tests_properties(samples/generate_self_spec PROPERTIES PASS_REGULAR_EXPRESSION
    "\"accepted_drafts\":[1-9][0-9]*.*\"draft_tokens\":[1-9].*\"generated_tokens\":24.*\"verify_passes\":[1-9]")
  # The draft vocabulary from the CLI: --rank-vocab, --draft-vocab N --draft-vocab-file F
  # equal to full depth, and its errors.
  add_test(NAME samples/generate_draft_vocab
    COMMAND ${CMAKE_COMMAND} -DGEN=$<TARGET_FILE:eexit-generate>
            -DCORPUS=${EEXIT_SHARED_DIR}/data/tinyshakespeare.txt
            -DWORK=${CMAKE_CURRENT_BINARY_DIR}/draft_vocab_cli
            -P ${CMAKE_CURRENT_LIST_DIR}/draft_vocab_cli.cmake)
  add_test(NAME samples/generate_self_spec_bad_exit
    COMMAND ${_gen} --prompt "ROMEO:" --max-tokens 4 --policy self-spec --draft-exit 2)
  set_tests_properties(samples/generate_self_spec_bad_exit PROPERTIES PASS_REGULAR_EXPRESSION
    "draft layer 2 is not an exit point of the model \\(exit layers: 1,3\\)")
  # Prefix caching (on by default): the same long prompt twice under a 16-row budget; the
  # second is admitted after the first's prefill, and starts on its cached blocks.
  set(_long "Once upon a time there was a little girl named Lily. She liked to play outside.")
  string(REPEAT "${_long} " 3 _long)
  add_test(NAME samples/generate_prefix_cache
    COMMAND ${_gen} --model ${_m} --tokenizer ${_t} --prompt "${_long}" --prompt "${_long}"
      --max-tokens 4 --max-batch-tokens 16 --json)
  set_tests_properties(samples/generate_prefix_cache PROPERTIES PASS_REGULAR_EXPRESSION
    "\"cached_tokens\":0,[^\n]*\n[^\n]*\"cached_tokens\":[1-9][0-9]+,")
  add_test(NAME samples/generate_no_prefix_cache
    COMMAND ${_gen} --model ${_m} --tokenizer ${_t} --prompt "${_long}" --prompt "${_long}"
      --max-tokens 4 --max-batch-tokens 16 --json --no-prefix-cache)
  set_tests_properties(samples/generate_no_prefix_cache PROPERTIES
    PASS_REGULAR_EXPRESSION "\"cached_tokens\":0,[^\n]*\n[^\n]*\"cached_tokens\":0,")
  add_test(NAME samples/generate_help COMMAND ${_gen} --help)
  set_tests_properties(samples/generate_help PROPERTIES
    PASS_REGULAR_EXPRESSION "<exe>/../share/eexit/models.*full \\| all-confident \\| split"
    FAIL_REGULAR_EXPRESSION "${EEXIT_SOURCE_DIR_RE}")
  # --max-tokens 0 generates nothing (the engine used to sample the prefill's token anyway),
  # and --json prints a request that finished without a token.
  add_test(NAME samples/generate_max_tokens_zero
    COMMAND ${_gen} --model ${_m} --tokenizer ${_t} --prompt "Once upon a time" --max-tokens 0 --json)
  set_tests_properties(samples/generate_max_tokens_zero PROPERTIES PASS_REGULAR_EXPRESSION
    "\"finish_reason\":\"length\".*\"generated_tokens\":0,.*\"text\":\"\",\"token_ids\":\\[\\]")
  # A KV cache too small for the request: it stops at the cache's size, and stderr says why.
  add_test(NAME samples/generate_kv_blocks_too_small
    COMMAND ${CMAKE_COMMAND} -DEXPECT=0
            "-DPATTERN=prompt 1 stopped after 12 of 40 tokens: the KV cache \\(--kv-blocks 1 = 16 tokens\\)"
            "-DCMD=${_gen};--model;${_m};--tokenizer;${_t};--prompt;Once upon a time;--max-tokens;40;--kv-blocks;1;--json"
            -P ${CMAKE_CURRENT_LIST_DIR}/expect_exit.cmake)
  # A request that fails before its first token (every weight NaN: the sampler rejects the
  # logits in the step): --json prints the engine's error, exit code 1.
  set(_nan ${CMAKE_CURRENT_BINARY_DIR}/nan_model/stories260K_nan.bin)
  add_test(NAME samples/make_nan_model
    COMMAND /usr/bin/python3 -c "import os,sys,struct; d=open(sys.argv[1],'rb').read(); os.makedirs(os.path.dirname(sys.argv[2]),exist_ok=True); open(sys.argv[2],'wb').write(d[:28]+struct.pack('<f',float('nan'))*((len(d)-28)//4))" ${_m} ${_nan})
  set_tests_properties(samples/make_nan_model PROPERTIES FIXTURES_SETUP eexit_nan_model)
  add_test(NAME samples/generate_json_error_before_first_token
    COMMAND ${CMAKE_COMMAND} -DEXPECT=1
            "-DSTDOUT_PATTERN=\"error\":\"[^\"]*logits contain NaN[^\"]*\".*\"finish_reason\":\"error\".*\"generated_tokens\":0,"
            "-DCMD=${_gen};--model;${_nan};--tokenizer;${_t};--prompt;Once;--json"
            -P ${CMAKE_CURRENT_LIST_DIR}/expect_exit.cmake)
  set_tests_properties(samples/generate_json_error_before_first_token PROPERTIES
    FIXTURES_REQUIRED eexit_nan_model)
  add_test(NAME samples/generate_missing_model COMMAND ${_gen} --model /nonexistent --prompt x)
  set_tests_properties(samples/generate_missing_model PROPERTIES
    PASS_REGULAR_EXPRESSION "eexit-generate: /nonexistent: no such file")
endif()

# GGUF: model and tokenizer from one file give the .bin's tokens; --exit-layers adds exits.
if(TARGET eexit-generate)
  set(_gen $<TARGET_FILE:eexit-generate>)
  set(_bin ${EEXIT_SHARED_DIR}/models/stories260K/stories260K.bin)
  add_test(NAME samples/generate_gguf
    COMMAND ${_gen} --model ${EEXIT_SHARED_DIR}/models/stories260K/stories260K.gguf
            --prompt "Once upon a time" --max-tokens 12 --json)
  set_tests_properties(samples/generate_gguf PROPERTIES PASS_REGULAR_EXPRESSION
    "\"text\":\", there was a little girl named Lily. She\",\"token_ids\":\\[432,383,286,261,376,298,315,421,395,317,426,338\\]")
  # A threshold every row passes: 11 of the 12 tokens leave after layer 2 (the first comes
  # from the prompt's last row, which runs full depth).
  add_test(NAME samples/generate_exit_layers
    COMMAND ${_gen} --model ${_bin} --tokenizer ${EEXIT_SHARED_DIR}/models/stories260K/tok512.bin
            --exit-layers 2 --policy all-confident --threshold -2 --prompt "Once upon a time"
            --max-tokens 12 --json)
  set_tests_properties(samples/generate_exit_layers PROPERTIES PASS_REGULAR_EXPRESSION
    "\"exit_histogram\":\\[11,1\\]")
  add_test(NAME samples/generate_rejects_exit_layers_text
    COMMAND ${CMAKE_COMMAND} -DEXPECT=2 "-DPATTERN=--exit-layers: '2x' is not a layer number"
            "-DCMD=${_gen};--prompt;x;--exit-layers;1,2x" -P ${CMAKE_CURRENT_LIST_DIR}/expect_exit.cmake)
  add_test(NAME samples/generate_rejects_exit_layers_range
    COMMAND ${_gen} --model ${_bin} --exit-layers 4 --prompt x)
  set_tests_properties(samples/generate_rejects_exit_layers_range PROPERTIES
    PASS_REGULAR_EXPRESSION "exit_layers: layer 4 out of range \\[0, 3\\]")
endif()
