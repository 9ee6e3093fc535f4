using System.Text.Json.Serialization;

namespace GptSharp.Data;

/// <summary>
/// Serialization metadata for the JSON this folder reads and writes, generated at compile time: no reflection at
/// run time, so a trimmed or NativeAOT build of the CLI reads and writes token files too.
/// </summary>
[JsonSerializable(typeof(TokenFileHeader))]
internal sealed partial class DataJsonContext : JsonSerializerContext;
