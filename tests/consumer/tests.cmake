# Install eexit into a scratch prefix, build a separate consumer project against it with
# find_package(eexit), and run it on stories260K: its first tokens are the greedy reference.
set(_prefix ${CMAKE_BINARY_DIR}/consumer/prefix)
add_test(NAME consumer/install
  COMMAND ${CMAKE_COMMAND} --install ${CMAKE_BINARY_DIR} --prefix ${_prefix} --component Unspecified)
set_tests_properties(consumer/install PROPERTIES FIXTURES_SETUP consumer_installed)

# consumer/<step>configure, <step>build and <step>run: the project in folder `dir`, built
# against the install, then `${build}/<ARGN...>` run; its output must match `regex`.
# Built at -O0: the test proves the package (find_package, the targets, what they link and
# include), and an optimised build of the header-only kernels without -march (each in three
# ISA copies) took minutes of the suite's time; -O0 takes seconds and gives the same tokens.
function(eexit_consumer_project step dir regex)
  set(build ${CMAKE_BINARY_DIR}/consumer/${step}build)
  add_test(NAME consumer/${step}configure
    COMMAND ${CMAKE_COMMAND} -S ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/${dir} -B ${build}
            -DCMAKE_PREFIX_PATH=${_prefix} -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG=-O0
            -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER})
  add_test(NAME consumer/${step}build COMMAND ${CMAKE_COMMAND} --build ${build})
  list(POP_FRONT ARGN app)
  add_test(NAME consumer/${step}run COMMAND ${build}/${app} ${ARGN})
  set_tests_properties(consumer/${step}configure PROPERTIES FIXTURES_REQUIRED consumer_installed
    FIXTURES_SETUP consumer_${step}configured)
  set_tests_properties(consumer/${step}build PROPERTIES
    FIXTURES_REQUIRED consumer_${step}configured FIXTURES_SETUP consumer_${step}built)
  set_tests_properties(consumer/${step}run PROPERTIES FIXTURES_REQUIRED consumer_${step}built
    PASS_REGULAR_EXPRESSION "${regex}")
endfunction()

eexit_consumer_project("" project "^403 407 261 378 432 383 286 261 "
  app ${EEXIT_SHARED_DIR}/models/stories260K/stories260K.bin)
# The same install, used through eexit::serve (Boost headers come with it).
if(TARGET eexit::serve)
  eexit_consumer_project(serve_ serve_project "^policy split threshold 0.25\n$" serve_app)
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

# The installed export lists eexit::cuda (and its kernels' static library) exactly when the
# CUDA backend is built, and the package config then finds the CUDA toolkit for it.
add_test(NAME consumer/exports
  COMMAND ${CMAKE_COMMAND} -DDIR=${_prefix}/${CMAKE_INSTALL_LIBDIR}/cmake/eexit
          -DCUDA=${EEXIT_CUDA_ENABLED} -P ${CMAKE_CURRENT_LIST_DIR}/check_exports.cmake)
set_tests_properties(consumer/exports PROPERTIES FIXTURES_REQUIRED consumer_installed)
