#version 330 core
layout(location = 0) in vec3 position;
layout(location = 1) in vec2 uv;
uniform mat4 mvp;
out vec2 v_uv;
void main() {
    v_uv = uv;
    gl_Position = mvp * vec4(position, 1.0);
}
