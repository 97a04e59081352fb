# cmake -DEXPECT=<code> [-DPATTERN=<regex>] [-DSTDOUT_PATTERN=<regex>] -DCMD=<a;list>
#       -P expect_exit.cmake
# Runs CMD and fails unless it exits with EXPECT, its stderr matches PATTERN and its stdout
# matches STDOUT_PATTERN (each when given).
execute_process(COMMAND ${CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc STREQUAL "${EXPECT}")
  message(FATAL_ERROR "exit code ${rc}, expected ${EXPECT}\nstdout: ${out}\nstderr: ${err}")
endif()
if(DEFINED PATTERN AND NOT err MATCHES "${PATTERN}")
  message(FATAL_ERROR "stderr does not match '${PATTERN}':\n${err}")
endif()
if(DEFINED STDOUT_PATTERN AND NOT out MATCHES "${STDOUT_PATTERN}")
  message(FATAL_ERROR "stdout does not match '${STDOUT_PATTERN}':\n${out}")
endif()
