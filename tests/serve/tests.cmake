# eexit-server end to end with the official `openai` npm client (tests/serve/e2e): needs
# node and npm; npm ci fetches the pinned client when node_modules is missing.
if(TARGET eexit-server)
  find_program(EEXIT_NODE node)
  find_program(EEXIT_NPM npm)
  if(EEXIT_NODE AND EEXIT_NPM)
    # A sanitizer build's runtime needs file descriptors of its own to report, so the
    # out-of-descriptors case runs only in builds without it (EEXIT_SANITIZED skips it).
    set(_sanitized 0)
    if(CMAKE_CXX_FLAGS MATCHES "-fsanitize")
      set(_sanitized 1)
    endif()
    add_test(NAME serve/e2e_openai
      COMMAND ${CMAKE_COMMAND} -E env EEXIT_SERVER=$<TARGET_FILE:eexit-server>
              EEXIT_SANITIZED=${_sanitized} bash ${CMAKE_CURRENT_LIST_DIR}/e2e/run.sh)
    set_tests_properties(serve/e2e_openai PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE)
  else()
    message(STATUS "node/npm not found: serve/e2e_openai is not registered")
  endif()
endif()

# The server's command line: --help, and exit code 2 with a message for bad flags.
if(TARGET eexit-server)
  add_test(NAME serve/server_help COMMAND eexit-server --help)
  set_tests_properties(serve/server_help PROPERTIES PASS_REGULAR_EXPRESSION "usage: eexit-server"
    FAIL_REGULAR_EXPRESSION "${EEXIT_SOURCE_DIR_RE}")
  set(_cases "--bogus|unknown flag --bogus" "--policy,fastest|--policy: .*unknown policy"
    "--threshold,x|--threshold: 'x' is not a number" "--port,70000|--port: 70000 is outside"
    "--chat-template,jinja|unknown style 'jinja'" "--device,tpu|--device: 'tpu' is not one of"
    "--shutdown-timeout,-1|--shutdown-timeout: -1 is outside"
    "--max-connections,0|--max-connections: 0 is outside")
  if(NOT TARGET eexit::cuda)
    list(APPEND _cases "--device,cuda|--device cuda: this build has no CUDA backend")
  endif()
  foreach(case IN LISTS _cases)
    string(REPLACE "|" ";" parts "${case}")
    list(GET parts 0 bad)
    list(GET parts 1 pattern)
    string(REPLACE "," ";" bad "${bad}")
    string(MAKE_C_IDENTIFIER "${bad}" _name)
    add_test(NAME serve/server_rejects${_name}
      COMMAND ${CMAKE_COMMAND} -DEXPECT=2 "-DPATTERN=${pattern}"
              "-DCMD=$<TARGET_FILE:eexit-server>;${bad}"
              -P ${CMAKE_CURRENT_LIST_DIR}/../samples/expect_exit.cmake)
  endforeach()
  add_test(NAME serve/server_missing_model COMMAND eexit-server --model /nonexistent --port 0)
  set_tests_properties(serve/server_missing_model PROPERTIES WILL_FAIL TRUE)
endif()

# Two replicas behind HAProxy (deploy/haproxy.cfg), one SIGKILLed under streaming load
# (tests/scripts/replica_test.sh, docs/DEPLOY.md). Needs haproxy, python3 and curl: a Debian
# package each, which scripts/install-deps.sh --tests installs.
if(TARGET eexit-server)
  find_program(EEXIT_HAPROXY haproxy PATHS /usr/sbin)
  find_program(EEXIT_PYTHON3 python3)
  find_program(EEXIT_CURL curl)
  if(EEXIT_HAPROXY AND EEXIT_PYTHON3 AND EEXIT_CURL)
    add_test(NAME serve/replicas_haproxy
      COMMAND ${CMAKE_COMMAND} -E env PATH=$ENV{PATH}:/usr/sbin
              bash ${CMAKE_CURRENT_LIST_DIR}/../scripts/replica_test.sh $<TARGET_FILE:eexit-server>)
    set_tests_properties(serve/replicas_haproxy PROPERTIES TIMEOUT 300 RUN_SERIAL TRUE)
  else()
    message(STATUS "haproxy/python3/curl not found: serve/replicas_haproxy is not registered "
                   "(bash scripts/install-deps.sh --tests installs them)")
  endif()
endif()

# The serving benchmark's load generator against a real server (tests/scripts/
# serve_bench_test.sh): every dataset, every request complete with max_tokens tokens.
if(TARGET eexit-server)
  find_program(EEXIT_PYTHON3 python3)
  if(EEXIT_PYTHON3)
    add_test(NAME serve/serve_bench_smoke
      COMMAND ${CMAKE_COMMAND} -E env EEXIT_PYTHON=${EEXIT_PYTHON3}
              bash ${CMAKE_CURRENT_LIST_DIR}/../scripts/serve_bench_test.sh $<TARGET_FILE:eexit-server>)
    set_tests_properties(serve/serve_bench_smoke PROPERTIES TIMEOUT 120)
  endif()
endif()
