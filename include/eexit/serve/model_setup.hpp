#pragma once
// Loading the model a server (or a serving test/benchmark) runs: on the heap, so that the
// service, the HTTP front and the engine can share one instance by reference.
#include <memory>
#include <string>

#include "eexit/model/load.hpp"

namespace eexit::serve {

// Loads `path` (see eexit::load_model, with `opt` applied) into a Model on `be`. `warning`
// is kept for callers that print one; nothing sets it today.
template <class Model, class Backend>
std::unique_ptr<Model> load_serving_model(Backend& be, const std::string& path,
                                          std::string* warning = nullptr,
                                          const LoadOptions& opt = {}) {
  if (warning) warning->clear();
  return std::make_unique<Model>(be, load_model(path, opt));
}

}  // namespace eexit::serve
