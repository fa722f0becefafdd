// Stand-in for gloo/algorithm.h: see README.md in this folder.
#pragma once
#include <gloo/context.h>
