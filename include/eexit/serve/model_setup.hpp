#pragma once
// Loading the model a server (or a serving test/benchmark) runs.
#include <memory>
#include <string>

#include "eexit/core/error.hpp"
#include "eexit/model/load.hpp"

namespace eexit::serve {

// Loads `path` into a Model. Works around LlamaModel validating its weights after moving
// their config out (so a checkpoint with classifier heads reads as "more heads than exit
// points"): when that happens, it retries without the classifier heads of a shared-head
// model, which only the classifier measure needs, and says so in *warning.
template <class Model, class Backend>
std::unique_ptr<Model> load_serving_model(Backend& be, const std::string& path,
                                          std::string* warning = nullptr) {
  auto w = load_model(path);
  try {
    return std::make_unique<Model>(be, w);
  } catch (const error& e) {
    const bool shared = w.config.early_exit.head == exit_head_kind::shared;
    if (!shared || w.exit_heads.empty() ||
        std::string(e.what()).find("more heads than exit points") == std::string::npos)
      throw;
    w.exit_heads.clear();
    w.config.early_exit.classifier = false;
    if (warning)
      *warning = "classifier heads dropped (the model loader rejects them): the classifier "
                 "measure is unavailable";
    return std::make_unique<Model>(be, std::move(w));
  }
}

}  // namespace eexit::serve
