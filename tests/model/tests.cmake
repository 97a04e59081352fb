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

# GGUF fixtures made by tools/gguf_tool.py (numpy, llama.cpp's reference quantizers) from the
# shared stories260K.gguf: each type with its numpy-dequantized F32 twin, an exit-point
# block, and a gpt2 vocabulary from the embedded model's tokenizer.json.
set(EEXIT_GGUF_FIXTURE_DIR ${CMAKE_CURRENT_BINARY_DIR}/gguf_fixture)
set(_eexit_gguf_tool ${PROJECT_SOURCE_DIR}/tools/gguf_tool.py)
set(_eexit_stories_gguf ${EEXIT_SHARED_DIR}/models/stories260K/stories260K.gguf)
set(_eexit_gguf_fixtures)
foreach(_eexit_q q8_0 q4_0 f16 bf16)
  add_test(NAME model/gguf_fixture_${_eexit_q}
    COMMAND /usr/bin/python3 ${_eexit_gguf_tool} requantize ${_eexit_stories_gguf}
            ${EEXIT_GGUF_FIXTURE_DIR}/stories260K_${_eexit_q}.gguf --type ${_eexit_q}
            --expected ${EEXIT_GGUF_FIXTURE_DIR}/stories260K_${_eexit_q}.expected.gguf)
  list(APPEND _eexit_gguf_fixtures model/gguf_fixture_${_eexit_q})
endforeach()
add_test(NAME model/gguf_fixture_exit
  COMMAND /usr/bin/python3 ${_eexit_gguf_tool} requantize ${_eexit_stories_gguf}
          ${EEXIT_GGUF_FIXTURE_DIR}/stories260K_exit2.gguf --type f32 --exit-layers 2
          --thresholds 0.5)
add_test(NAME model/gguf_fixture_vocab
  COMMAND /usr/bin/python3 ${_eexit_gguf_tool} vocab
          ${PROJECT_SOURCE_DIR}/models/eexit-shakespeare/tokenizer.json
          ${EEXIT_GGUF_FIXTURE_DIR}/shakespeare_vocab.gguf)
# K-quants: random super-blocks of each type and numpy's dequantization; kmix: a tiny llama in
# llama.cpp's Q4_K_M mix (Q4_K/Q5_K/Q6_K, Q5_0/Q5_1 fallbacks) and its all-F32 twin.
foreach(_eexit_k q4k q5k q6k)
  string(REPLACE "k" "_k" _eexit_kname ${_eexit_k})
  add_test(NAME model/gguf_fixture_${_eexit_k}
    COMMAND /usr/bin/python3 ${_eexit_gguf_tool} ${_eexit_k}
            ${EEXIT_GGUF_FIXTURE_DIR}/${_eexit_kname}.gguf
            ${EEXIT_GGUF_FIXTURE_DIR}/${_eexit_kname}.expected.gguf)
  list(APPEND _eexit_gguf_fixtures model/gguf_fixture_${_eexit_k})
endforeach()
add_test(NAME model/gguf_fixture_kmix
  COMMAND /usr/bin/python3 ${_eexit_gguf_tool} kmix ${EEXIT_GGUF_FIXTURE_DIR}/kmix.gguf
          ${EEXIT_GGUF_FIXTURE_DIR}/kmix.expected.gguf)
list(APPEND _eexit_gguf_fixtures model/gguf_fixture_exit model/gguf_fixture_vocab
  model/gguf_fixture_kmix)
set_tests_properties(${_eexit_gguf_fixtures} PROPERTIES FIXTURES_SETUP eexit_gguf_fixtures)
if(TEST model/gguf_test)
  set_tests_properties(model/gguf_test PROPERTIES
    FIXTURES_REQUIRED eexit_gguf_fixtures
    ENVIRONMENT "EEXIT_GGUF_FIXTURE_DIR=${EEXIT_GGUF_FIXTURE_DIR}")
endif()

# A small variant of the Llama 3.2 1B config (facebook/layerskip-llama3.2-1B: llama3
# rope_scaling, tied, GQA 4:1, head_dim 64, bf16) in its HF form and its GGUF forms (bf16,
# f32; gguf_tool.py from-hf, laid out as llama.cpp's converter), and the float64 reference of
# a 4160-token prompt (tools/reference_dump.py): llama3_forward_test compares our forward.
set(EEXIT_L32_FIXTURE_DIR ${CMAKE_CURRENT_BINARY_DIR}/l32_fixture)
set(_eexit_py /usr/bin/python3)
add_test(NAME model/l32_fixture_make
  COMMAND sh -c "${_eexit_py} ${PROJECT_SOURCE_DIR}/tools/make_random_model.py $0/hf \
--preset llama-3.2-1b --dim 512 --heads 8 --kv-heads 2 --layers 2 --hidden 1024 --vocab 512 \
--exit-layers 0 && ${_eexit_py} ${_eexit_gguf_tool} from-hf $0/hf $0/l32.bf16.gguf \
&& ${_eexit_py} ${_eexit_gguf_tool} from-hf $0/hf $0/l32.f32.gguf --type f32"
    ${EEXIT_L32_FIXTURE_DIR})
set_tests_properties(model/l32_fixture_make PROPERTIES FIXTURES_SETUP eexit_l32_make)
add_test(NAME model/l32_fixture_reference
  COMMAND ${_eexit_py} ${PROJECT_SOURCE_DIR}/tools/reference_dump.py ${EEXIT_L32_FIXTURE_DIR}/hf
          ${EEXIT_L32_FIXTURE_DIR}/reference.json --tokens 4160 --seed 1 --exit-layers 0
          --check 0,1,2,3,100,1000,2047,2048,3000,4095,4096,4159)
set_tests_properties(model/l32_fixture_reference PROPERTIES
  FIXTURES_REQUIRED eexit_l32_make FIXTURES_SETUP eexit_l32)
if(TEST model/llama3_forward_test)
  set_tests_properties(model/llama3_forward_test PROPERTIES
    FIXTURES_REQUIRED "eexit_l32_make;eexit_l32"
    ENVIRONMENT "EEXIT_L32_FIXTURE_DIR=${EEXIT_L32_FIXTURE_DIR}")
endif()
