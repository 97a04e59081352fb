#pragma once
// Umbrella header: the engine, the CPU backend, the stock caches, policies, loaders,
// tokenizers and samplers. CUDA and serving have their own headers (backend/cuda.hpp,
// serve/) because they pull in heavier dependencies.
#include "eexit/backend/cpu.hpp"
#include "eexit/cache/contiguous.hpp"
#include "eexit/cache/paged.hpp"
#include "eexit/concepts.hpp"
#include "eexit/core/error.hpp"
#include "eexit/engine/engine.hpp"
#include "eexit/engine/teacher_forcing.hpp"
#include "eexit/model/llama.hpp"
#include "eexit/model/load.hpp"
#include "eexit/policy/exit_policy.hpp"
#include "eexit/policy/full_depth.hpp"
#include "eexit/policy/policy.hpp"
#include "eexit/policy/registry.hpp"
#include "eexit/sampling/sampler.hpp"
#include "eexit/text/tokenizer.hpp"

namespace eexit {
static_assert(backend<CpuBackend>);
static_assert(kv_cache<PagedCache<CpuBackend, 16>>);
static_assert(prefix_caching_cache<PagedCache<CpuBackend, 16>>);
static_assert(kv_cache<ContiguousCache<CpuBackend>>);
static_assert(exit_model<LlamaModel<CpuBackend>>);
static_assert(policy<FullDepth>);
static_assert(policy<AllConfident>);
static_assert(policy<SplitAtExit>);
static_assert(policy<RuntimePolicy>);
static_assert(policy<Adaptive>);
static_assert(policy<ExitPolicy<AnyMeasure, ExitConfidentRows, DeferredRecompute>>);
}  // namespace eexit
