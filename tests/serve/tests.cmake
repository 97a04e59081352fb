# eexit-server end to end with the official `openai` npm client (tests/serve/e2e): needs
# node and npm; npm ci fetches the pinned client when node_modules is missing.
if(TARGET eexit-server)
  find_program(EEXIT_NODE node)
  find_program(EEXIT_NPM npm)
  if(EEXIT_NODE AND EEXIT_NPM)
    add_test(NAME serve/e2e_openai
      COMMAND ${CMAKE_COMMAND} -E env EEXIT_SERVER=$<TARGET_FILE:eexit-server>
              bash ${CMAKE_CURRENT_LIST_DIR}/e2e/run.sh)
    set_tests_properties(serve/e2e_openai PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE)
  else()
    message(STATUS "node/npm not found: serve/e2e_openai is not registered")
  endif()
endif()
