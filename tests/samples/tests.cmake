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
  add_test(NAME samples/generate_self_spec_bad_exit
    COMMAND ${_gen} --prompt "ROMEO:" --max-tokens 4 --policy self-spec --draft-exit 2)
  set_tests_properties(samples/generate_self_spec_bad_exit PROPERTIES PASS_REGULAR_EXPRESSION
    "draft layer 2 is not an exit point of the model \\(exit layers: 1,3\\)")
  add_test(NAME samples/generate_help COMMAND ${_gen} --help)
  set_tests_properties(samples/generate_help PROPERTIES
    PASS_REGULAR_EXPRESSION "<exe>/../share/eexit/models.*full \\| all-confident \\| split"
    FAIL_REGULAR_EXPRESSION "${EEXIT_SOURCE_DIR_RE}")
  add_test(NAME samples/generate_missing_model COMMAND ${_gen} --model /nonexistent --prompt x)
  set_tests_properties(samples/generate_missing_model PROPERTIES
    PASS_REGULAR_EXPRESSION "eexit-generate: /nonexistent: no such file")
endif()
