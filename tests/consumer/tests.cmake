# Install eexit into a scratch prefix, build a separate consumer project against it with
# find_package(eexit), and run it on stories260K: its first tokens are the greedy reference.
set(_prefix ${CMAKE_BINARY_DIR}/consumer/prefix)
set(_build ${CMAKE_BINARY_DIR}/consumer/build)
add_test(NAME consumer/install
  COMMAND ${CMAKE_COMMAND} --install ${CMAKE_BINARY_DIR} --prefix ${_prefix} --component Unspecified)
add_test(NAME consumer/configure
  COMMAND ${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR}/project -B ${_build}
          -DCMAKE_PREFIX_PATH=${_prefix} -DCMAKE_BUILD_TYPE=Release
          -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
add_test(NAME consumer/build COMMAND ${CMAKE_COMMAND} --build ${_build})
add_test(NAME consumer/run
  COMMAND ${_build}/app ${EEXIT_SHARED_DIR}/models/stories260K/stories260K.bin)
set_tests_properties(consumer/install PROPERTIES FIXTURES_SETUP consumer_installed)
set_tests_properties(consumer/configure PROPERTIES FIXTURES_REQUIRED consumer_installed
  FIXTURES_SETUP consumer_configured)
set_tests_properties(consumer/build PROPERTIES FIXTURES_REQUIRED consumer_configured
  FIXTURES_SETUP consumer_built)
set_tests_properties(consumer/run PROPERTIES FIXTURES_REQUIRED consumer_built
  PASS_REGULAR_EXPRESSION "^403 407 261 378 432 383 286 261 ")

# The same install, used through eexit::serve (Boost headers come with it).
if(TARGET eexit::serve)
  set(_sbuild ${CMAKE_BINARY_DIR}/consumer/serve_build)
  add_test(NAME consumer/serve_configure
    COMMAND ${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR}/serve_project -B ${_sbuild}
            -DCMAKE_PREFIX_PATH=${_prefix} -DCMAKE_BUILD_TYPE=Release
            -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
  add_test(NAME consumer/serve_build COMMAND ${CMAKE_COMMAND} --build ${_sbuild})
  add_test(NAME consumer/serve_run COMMAND ${_sbuild}/serve_app)
  set_tests_properties(consumer/serve_configure PROPERTIES FIXTURES_REQUIRED consumer_installed
    FIXTURES_SETUP consumer_serve_configured)
  set_tests_properties(consumer/serve_build PROPERTIES FIXTURES_REQUIRED consumer_serve_configured
    FIXTURES_SETUP consumer_serve_built)
  set_tests_properties(consumer/serve_run PROPERTIES FIXTURES_REQUIRED consumer_serve_built
    PASS_REGULAR_EXPRESSION "^policy split threshold 0.25\n$")
endif()

# The embedded model is installed with the headers, and the installed eexit-generate finds
# it relative to itself (also when moved away from the build tree) and prints no build
# machine path in --help.
if(TARGET eexit-generate)
  add_test(NAME consumer/installed_model
    COMMAND ${CMAKE_COMMAND} -DPREFIX=${_prefix} -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
            -P ${CMAKE_CURRENT_LIST_DIR}/installed_model.cmake)
  set_tests_properties(consumer/installed_model PROPERTIES FIXTURES_REQUIRED consumer_installed)
endif()
