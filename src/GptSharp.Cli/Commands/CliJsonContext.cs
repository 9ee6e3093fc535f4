using System.Text.Json.Serialization;

namespace GptSharp.Cli.Commands;

/// <summary>Compile-time serialization metadata for the JSON the commands parse: the trimmed and NativeAOT builds have no reflection-based serializer.</summary>
[JsonSerializable(typeof(int[]))]
internal sealed partial class CliJsonContext : JsonSerializerContext;
