#pragma once
// One entry point for every checkpoint format eexit reads, chosen by what the path is.
#include <filesystem>
#include <fstream>
#include <string>

#include "eexit/core/error.hpp"
#include "eexit/model/hf.hpp"
#include "eexit/model/llama2c.hpp"
#include "eexit/model/weights.hpp"

namespace eexit {

// A directory, *.safetensors or *.json -> Hugging Face layout (load_hf); any other file is
// sniffed: GGUF is refused by name (it has its own loader), everything else is read as a
// llama2.c checkpoint, whose own size check rejects files that are not one.
// opt.weights converts every matrix (llama2.c files are fp32; HF ones keep their dtype by
// default).
inline ModelWeights load_model(const std::string& path, const LoadOptions& opt = {}) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) return load_hf(path, opt);
  if (!fs::exists(p, ec)) throw error(path, "no such file or directory");
  const std::string ext = p.extension().string();
  if (ext == ".safetensors" || ext == ".json") return load_hf(path, opt);

  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, "cannot open file");
  char magic[4] = {};
  in.read(magic, 4);
  if (in.gcount() == 4 && std::string_view(magic, 4) == "GGUF")
    throw error(path, "GGUF files are not read by load_model (use the GGUF loader)");
  ModelWeights m = load_llama2c(path);
  if (opt.weights) m.convert(*opt.weights);
  return m;
}

}  // namespace eexit
