// libactnn.so (see passes/CMakeLists.txt): all of actnn_passes, linked whole,
// so its static registrations run when the library is loaded. Nothing of its
// own.
