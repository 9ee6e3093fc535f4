using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace GptSharp.Serving;

/// <summary>A request the server refuses, answered with OpenAI's error JSON and <see cref="Status"/>.</summary>
internal sealed class ApiException(int status, string message, string? param = null, string? code = null) : Exception(message)
{
    public int Status { get; } = status;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    /// <summary>OpenAI's error type for a status.</summary>
    public static string TypeOf(int status) => status switch
    {
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        >= 500 => "server_error",
        _ => "invalid_request_error",
    };

    /// <summary>Writes <c>{"error": {"message", "type", "param", "code"}}</c> with the status.</summary>
    public static async Task WriteAsync(HttpContext context, int status, string message, string? param = null, string? code = null)
    {
        if (context.Response.HasStarted) return;
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/json";
        await context.Response.Body.WriteAsync(Json(status, message, param, code), context.RequestAborted);
    }

    /// <summary>The error body <c>{"error": {"message", "type", "param", "code"}}</c>, UTF-8.</summary>
    public static byte[] Json(int status, string message, string? param = null, string? code = null)
    {
        var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartObject("error");
            json.WriteString("message", message);
            json.WriteString("type", TypeOf(status));
            if (param is null) json.WriteNull("param"); else json.WriteString("param", param);
            if (code is null) json.WriteNull("code"); else json.WriteString("code", code);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return buffer.ToArray();
    }
}
