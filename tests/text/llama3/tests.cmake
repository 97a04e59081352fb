# The Llama 3 tokenizer against two npm implementations nobody here wrote, and the Llama 3
# chat template and stop tokens through eexit-server (tests/text/llama3/). The fixtures
# (a Llama 3 tokenizer.json written from llama3-tokenizer-js's vocabulary and merges, its
# configs, a vocab-only GGUF) are generated into the build dir: ~14 MB, not committed.
# Registered whether or not node is installed: without node/npm the tests fail, not skip.
set(_l3 ${CMAKE_CURRENT_LIST_DIR})
set(_l3_out ${CMAKE_CURRENT_BINARY_DIR}/llama3)
add_executable(llama3_tok_driver ${_l3}/llama3_tok_driver.cpp)
target_link_libraries(llama3_tok_driver PRIVATE eexit::eexit eexit_dev_flags)

add_test(NAME text/llama3_fixtures COMMAND bash ${_l3}/run.sh fixtures ${_l3_out})
set_tests_properties(text/llama3_fixtures PROPERTIES FIXTURES_SETUP llama3 TIMEOUT 300)
add_test(NAME text/llama3_reference
  COMMAND bash ${_l3}/run.sh compare ${_l3_out} $<TARGET_FILE:llama3_tok_driver>
          ${EEXIT_SHARED_DIR}/data/tinyshakespeare.txt)
set_tests_properties(text/llama3_reference PROPERTIES FIXTURES_REQUIRED llama3 TIMEOUT 300)
if(TARGET eexit-server)
  add_test(NAME serve/llama3_chat
    COMMAND ${CMAKE_COMMAND} -E env EEXIT_SERVER=$<TARGET_FILE:eexit-server>
            EEXIT_LLAMA3_DIR=${_l3_out} EEXIT_LLAMA3_DRIVER=$<TARGET_FILE:llama3_tok_driver>
            bash ${_l3}/run.sh chat ${_l3_out})
  set_tests_properties(serve/llama3_chat PROPERTIES FIXTURES_REQUIRED llama3 TIMEOUT 300)
endif()
