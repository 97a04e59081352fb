# libFuzzer targets (EEXIT_BUILD_FUZZERS=ON, clang only). Run one, for example:
#   build/tests/safetensors_fuzz -max_total_time=180 corpus/ ${PROJECT_SOURCE_DIR}/tests/fuzz/seeds/safetensors
if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "EEXIT_BUILD_FUZZERS needs clang (libFuzzer); set CMAKE_CXX_COMPILER=clang++")
endif()

add_executable(safetensors_fuzz ${CMAKE_CURRENT_LIST_DIR}/safetensors_fuzz.cpp)
target_link_libraries(safetensors_fuzz PRIVATE eexit::eexit eexit_dev_flags)
target_compile_options(safetensors_fuzz PRIVATE -fsanitize=fuzzer,address,undefined
  -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
target_link_options(safetensors_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
