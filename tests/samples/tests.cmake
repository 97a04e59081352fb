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
    "--model|--model needs a value")
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
