# libFuzzer targets (EEXIT_BUILD_FUZZERS=ON, clang only); scripts/fuzz.sh builds them in
# build/fuzz, makes the seed corpora (tools/make_fuzz_seeds.py) and runs each for N seconds.
# One by hand:
#   build/fuzz/tests/safetensors_fuzz -max_total_time=180 corpus/ tests/fuzz/seeds/safetensors
# (tests/fuzz/README.md: the corpora, the GGUF seeds and the runs so far)
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "EEXIT_BUILD_FUZZERS needs clang (libFuzzer); set CMAKE_CXX_COMPILER=clang++")
endif()

set(EEXIT_FUZZERS safetensors_fuzz tokenizer_json_fuzz tokenizer_bin_fuzz
    llama2c_checkpoint_fuzz config_json_fuzz openai_request_fuzz
    gguf_fuzz)  # gguf: container + llama loader + tokenizer
foreach(f IN LISTS EEXIT_FUZZERS)
  add_executable(${f} ${CMAKE_CURRENT_LIST_DIR}/${f}.cpp)
  target_link_libraries(${f} PRIVATE eexit::eexit eexit_dev_flags)
  target_compile_options(${f} PRIVATE -fsanitize=fuzzer,address,undefined
    -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
  target_link_options(${f} PRIVATE -fsanitize=fuzzer,address,undefined)
endforeach()
add_custom_target(fuzzers DEPENDS ${EEXIT_FUZZERS})
