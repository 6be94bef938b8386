/** The hidden command that makes an ncps process its own OTLP exporter (otlp-exporter.ts). */
export const EXPORTER_COMMAND = "__otlp-exporter";
