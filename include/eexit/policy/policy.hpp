#pragma once
// The policy concept lives with every other concept in eexit/concepts.hpp; this header
// stays so that existing includes keep working.
#include "eexit/concepts.hpp"
