# Concept checks that must reject a non-conforming type at compile time: each source is a
# target excluded from "all", and a ctest builds it; the failing cases pass only when the
# compiler's message names the concept. conforming.cpp is the control that must build.
foreach(case not_a_cache not_a_policy not_a_backend not_a_model conforming)
  add_executable(compile_fail_${case} EXCLUDE_FROM_ALL ${CMAKE_CURRENT_LIST_DIR}/${case}.cpp)
  target_link_libraries(compile_fail_${case} PRIVATE eexit::eexit)
  add_test(NAME compile_fail/${case}
    COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target compile_fail_${case})
endforeach()
# The build must fail *because of the concept*: the compiler names it.
set_tests_properties(compile_fail/not_a_cache PROPERTIES
  PASS_REGULAR_EXPRESSION "required for the satisfaction of [^ ]*kv_cache<")
set_tests_properties(compile_fail/not_a_policy PROPERTIES
  PASS_REGULAR_EXPRESSION "required for the satisfaction of [^ ]*policy<")
set_tests_properties(compile_fail/not_a_backend PROPERTIES
  PASS_REGULAR_EXPRESSION "required for the satisfaction of [^ ]*backend<")
set_tests_properties(compile_fail/not_a_model PROPERTIES
  PASS_REGULAR_EXPRESSION "required for the satisfaction of [^ ]*exit_model<")
