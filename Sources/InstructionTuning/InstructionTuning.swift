// InstructionTuning module
