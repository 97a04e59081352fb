#pragma once
// Loading the model a server (or a serving test/benchmark) runs: on the heap, so that the
// service, the HTTP front and the engine can share one instance by reference.
#include <memory>
#include <string>

#include "eexit/model/load.hpp"

namespace eexit::serve {

// Loads `path` (see eexit::load_model, with `opt` applied: e.g. --exit-layers) into a Model
// on `be`; errors are eexit::error.
template <class Model, class Backend>
std::unique_ptr<Model> load_serving_model(Backend& be, const std::string& path,
                                          const LoadOptions& opt = {}) {
  return std::make_unique<Model>(be, load_model(path, opt));
}

}  // namespace eexit::serve
