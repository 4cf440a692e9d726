# Generates protobuf-c code for every .proto under proto/ (and google/protobuf/descriptor.proto,
# which reflection needs), plus one FileDescriptorSet embedded as a C array for server reflection.
find_program(PROTOC protoc REQUIRED)
find_program(PROTOC_C protoc-c REQUIRED)
set(PROTO_SYS_DIR /usr/include)

file(GLOB_RECURSE CREDEX_PROTOS RELATIVE ${PROJECT_SOURCE_DIR}/proto CONFIGURE_DEPENDS
     ${PROJECT_SOURCE_DIR}/proto/*.proto)
list(SORT CREDEX_PROTOS)
set(GEN_DIR ${PROJECT_BINARY_DIR}/gen)
file(MAKE_DIRECTORY ${GEN_DIR})

set(PROTO_SRCS)
foreach(p ${CREDEX_PROTOS} google/protobuf/descriptor.proto)
  string(REGEX REPLACE "\\.proto$" "" base ${p})
  if(p STREQUAL "google/protobuf/descriptor.proto")
    set(src ${PROTO_SYS_DIR}/${p})
  else()
    set(src ${PROJECT_SOURCE_DIR}/proto/${p})
  endif()
  add_custom_command(
    OUTPUT ${GEN_DIR}/${base}.pb-c.c ${GEN_DIR}/${base}.pb-c.h
    COMMAND ${PROTOC_C} -I${PROJECT_SOURCE_DIR}/proto -I${PROTO_SYS_DIR} --c_out=${GEN_DIR} ${src}
    DEPENDS ${src}
    COMMENT "protoc-c ${p}" VERBATIM)
  list(APPEND PROTO_SRCS ${GEN_DIR}/${base}.pb-c.c)
endforeach()

# The descriptor set: every credex file with its imports, no source info (smaller binaries).
set(FDS ${GEN_DIR}/credex.fds)
set(FDS_C ${GEN_DIR}/credex_fds.c)
set(PROTO_ABS)
foreach(p ${CREDEX_PROTOS})
  list(APPEND PROTO_ABS ${PROJECT_SOURCE_DIR}/proto/${p})
endforeach()
add_custom_command(
  OUTPUT ${FDS}
  COMMAND ${PROTOC} -I${PROJECT_SOURCE_DIR}/proto -I${PROTO_SYS_DIR} --include_imports
          --descriptor_set_out=${FDS} ${CREDEX_PROTOS}
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}/proto
  DEPENDS ${PROTO_ABS}
  COMMENT "protoc descriptor set" VERBATIM)
add_custom_command(
  OUTPUT ${FDS_C}
  COMMAND ${CMAKE_COMMAND} -DIN=${FDS} -DOUT=${FDS_C} -DSYM=credex_descriptor_set
          -P ${PROJECT_SOURCE_DIR}/cmake/embed.cmake
  DEPENDS ${FDS} ${PROJECT_SOURCE_DIR}/cmake/embed.cmake
  COMMENT "embed descriptor set" VERBATIM)

add_library(credex_proto STATIC ${PROTO_SRCS} ${FDS_C})
target_include_directories(credex_proto SYSTEM PUBLIC ${GEN_DIR})
target_link_libraries(credex_proto PUBLIC PkgConfig::PROTOBUFC)
target_compile_options(credex_proto PRIVATE -w)
