# libFuzzer targets (EEXIT_BUILD_FUZZERS=ON, clang only). Run one, for example:
#   build/tests/safetensors_fuzz -max_total_time=180 corpus/ ${PROJECT_SOURCE_DIR}/tests/fuzz/seeds/safetensors
# (tests/fuzz/README.md: the GGUF corpus and the runs so far)
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "EEXIT_BUILD_FUZZERS needs clang (libFuzzer); set CMAKE_CXX_COMPILER=clang++")
endif()

function(eexit_add_fuzzer name)
  add_executable(${name} ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/${name}.cpp)
  target_link_libraries(${name} PRIVATE eexit::eexit eexit_dev_flags)
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined
    -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
endfunction()

eexit_add_fuzzer(safetensors_fuzz)
eexit_add_fuzzer(gguf_fuzz)  # container + llama loader + tokenizer
