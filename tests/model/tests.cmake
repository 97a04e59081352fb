# Converted HF checkpoints of the shared stories260K.bin, made by tools/llama2c_to_hf.py
# as a ctest fixture: the loader test compares them with the .bin, which checks the
# converter and the loaders against each other. Python is Debian's, which has torch.
set(EEXIT_HF_FIXTURE_DIR ${CMAKE_CURRENT_BINARY_DIR}/hf_fixture)
set(_eexit_stories ${EEXIT_SHARED_DIR}/models/stories260K/stories260K.bin)

add_test(NAME model/convert_stories260K_f32
  COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tools/llama2c_to_hf.py ${_eexit_stories}
          ${EEXIT_HF_FIXTURE_DIR}/stories260K_f32 --dtype f32)
add_test(NAME model/convert_stories260K_bf16_sharded
  COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tools/llama2c_to_hf.py ${_eexit_stories}
          ${EEXIT_HF_FIXTURE_DIR}/stories260K_bf16_sharded --dtype bf16 --shards 2)
add_test(NAME model/convert_stories260K_f16
  COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tools/llama2c_to_hf.py ${_eexit_stories}
          ${EEXIT_HF_FIXTURE_DIR}/stories260K_f16 --dtype f16)
set_tests_properties(model/convert_stories260K_f32 model/convert_stories260K_bf16_sharded
  model/convert_stories260K_f16 PROPERTIES FIXTURES_SETUP eexit_hf_stories260K)

# loader_test compares the converted weights with the .bin; logits_test runs both.
foreach(_eexit_t model/loader_test model/logits_test model/typed_weights_test)
  if(TEST ${_eexit_t})
    set_tests_properties(${_eexit_t} PROPERTIES
      FIXTURES_REQUIRED eexit_hf_stories260K
      ENVIRONMENT "EEXIT_HF_FIXTURE_DIR=${EEXIT_HF_FIXTURE_DIR}")
  endif()
endforeach()
