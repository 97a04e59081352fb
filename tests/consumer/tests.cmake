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

# The installed export lists eexit::cuda (and its kernels' static library) exactly when the
# CUDA backend is built, and the package config then finds the CUDA toolkit for it.
add_test(NAME consumer/exports
  COMMAND ${CMAKE_COMMAND} -DDIR=${_prefix}/${CMAKE_INSTALL_LIBDIR}/cmake/eexit
          -DCUDA=${EEXIT_CUDA_ENABLED} -P ${CMAKE_CURRENT_LIST_DIR}/check_exports.cmake)
set_tests_properties(consumer/exports PROPERTIES FIXTURES_REQUIRED consumer_installed)
