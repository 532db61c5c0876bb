// The functions of this module are static inline, in include/CSystemExtras.h.
#include "CSystemExtras.h"
