# cmake -DPREFIX=<install prefix> -DSOURCE_DIR=<source tree> -P installed_model.cmake
# 1. The embedded model is installed under PREFIX/share/eexit/models.
# 2. The installed eexit-generate --help names no build machine path.
# 3. A copy of PREFIX's bin/ and share/ outside the source tree (so that the search list's
#    source-tree fallback cannot find models/) generates with the default model.
set(_model ${PREFIX}/share/eexit/models/eexit-shakespeare)
foreach(f config.json model.safetensors tokenizer.json tokenizer_config.json)
  if(NOT EXISTS ${_model}/${f})
    message(FATAL_ERROR "not installed: ${_model}/${f}")
  endif()
endforeach()

execute_process(COMMAND ${PREFIX}/bin/eexit-generate --help OUTPUT_VARIABLE _help RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0 OR NOT _help MATCHES "share/eexit/models/eexit-shakespeare")
  message(FATAL_ERROR "eexit-generate --help (exit ${_rc}):\n${_help}")
endif()
string(FIND "${_help}" "${SOURCE_DIR}" _at)
if(NOT _at EQUAL -1)
  message(FATAL_ERROR "eexit-generate --help prints the source path ${SOURCE_DIR}:\n${_help}")
endif()

if(DEFINED ENV{TMPDIR})
  set(_tmp $ENV{TMPDIR})
else()
  set(_tmp /tmp)
endif()
string(RANDOM LENGTH 12 _r)
set(_moved ${_tmp}/eexit-installed-${_r})
string(FIND "${_moved}" "${SOURCE_DIR}" _inside)
if(NOT _inside EQUAL -1)
  message(FATAL_ERROR "scratch folder ${_moved} is inside the source tree")
endif()
file(MAKE_DIRECTORY ${_moved})
file(COPY ${PREFIX}/bin/eexit-generate DESTINATION ${_moved}/bin)
file(COPY ${_model} DESTINATION ${_moved}/share/eexit/models)
execute_process(COMMAND ${_moved}/bin/eexit-generate --prompt "ROMEO:" --max-tokens 4 --json
                OUTPUT_VARIABLE _out ERROR_VARIABLE _err RESULT_VARIABLE _rc)
file(REMOVE_RECURSE ${_moved})
if(NOT _rc EQUAL 0 OR NOT _out MATCHES "\"generated_tokens\":4")
  message(FATAL_ERROR "moved eexit-generate (exit ${_rc}):\n${_out}\n${_err}")
endif()
message(STATUS "installed model found relative to the executable: ${_out}")
