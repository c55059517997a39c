// C API over libsentencepiece (placeholder until the binding lands).
#pragma once
